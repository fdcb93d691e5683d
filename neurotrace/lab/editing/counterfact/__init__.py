"""CounterFact's side: the cases (edit, paraphrase and neighbourhood prompts) and the metrics measured before
and after an edit (efficacy, generalisation, specificity, fluency, consistency)."""
