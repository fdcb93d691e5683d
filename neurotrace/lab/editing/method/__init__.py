"""The rank-one method: keys and values (vectors), the key covariance C = E[k k^T], ROME's and MEMIT's
updates and their closed form."""
