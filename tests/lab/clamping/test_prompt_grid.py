"""Prompt grids: inline prompts, JSONL / CSV / TSV files, and errors that name the field."""

import pytest

from neurotrace.lab.clamping.prompt_grid import (
    PromptItem,
    parse_prompt_text,
    read_prompt_file,
    resolve_prompts,
)
from neurotrace.lab.errors import InputError
from neurotrace.testing.errors import raises_lab_error


def test_jsonl_csv_and_tsv_give_the_same_grid(tmp_path):
    (tmp_path / "g.jsonl").write_text('{"prompt": "The sky is", "core_id": "c1", "type": "cont", "level": 1}\n\n'
                                      '{"prompt": "Why, is it?", "core_id": "c2"}\n', encoding="utf-8")
    (tmp_path / "g.csv").write_text('core_id,type,level,prompt\nc1,cont,1,The sky is\nc2,,,"Why, is it?"\n',
                                    encoding="utf-8")
    (tmp_path / "g.tsv").write_text("prompt\tcore_id\ttype\tlevel\nThe sky is\tc1\tcont\t1\nWhy, is it?\tc2\t\t\n",
                                    encoding="utf-8")
    grids = [read_prompt_file(str(tmp_path / f"g.{ext}")) for ext in ("jsonl", "csv", "tsv")]
    assert grids[0] == grids[1] == grids[2]
    assert grids[0][0] == PromptItem(prompt="The sky is", core_id="c1", type="cont", level="1")


def test_format_is_sniffed_without_a_known_extension(tmp_path):
    assert parse_prompt_text('{"prompt": "hi"}\n')[0].prompt == "hi"
    assert parse_prompt_text("prompt\tlevel\nhi\t2\n")[0].level == "2"
    assert parse_prompt_text("level,prompt\n2,hi\n")[0].prompt == "hi"


def test_inline_and_file_prompts_combine_with_default_tags(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"prompt": "from file"}\n', encoding="utf-8")
    items = resolve_prompts(["plain", PromptItem(prompt="tagged", core_id="x", type="q")], str(path))
    assert [(p.prompt, p.core_id, p.type, p.level) for p in items] == [
        ("plain", "p0", "", ""), ("tagged", "x", "q", ""), ("from file", "p2", "", "")]


@pytest.mark.parametrize("name,text", [
    ("bad.jsonl", '{"prompt": "ok"}\n{not json\n'),
    ("noprompt.jsonl", '{"text": "hi"}\n'),
    ("list.jsonl", '["hi"]\n'),
    ("nocol.csv", "core_id,text\nc1,hi\n"),
    ("empty.csv", "prompt\n"),
    ("blank.tsv", "prompt\tcore_id\n\tc1\n"),
])
def test_ill_formed_files_name_prompt_file(tmp_path, name, text):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with raises_lab_error(InputError) as err:
        read_prompt_file(str(tmp_path / name))
    assert err.value.field == "prompt_file"


def test_missing_and_unreadable_files_name_prompt_file(tmp_path):
    with raises_lab_error(InputError) as err:
        read_prompt_file(str(tmp_path / "nope.jsonl"))
    assert err.value.field == "prompt_file" and "no file" in err.value.message
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81prompt")
    with raises_lab_error(InputError) as err:
        read_prompt_file(str(tmp_path / "bin.csv"))
    assert err.value.field == "prompt_file"
    with raises_lab_error(InputError) as err:
        read_prompt_file(str(tmp_path))
    assert err.value.field == "prompt_file"


def test_no_prompts_or_an_empty_prompt_names_prompts():
    for prompts in ([], ["ok", "   "]):
        with raises_lab_error(InputError) as err:
            resolve_prompts(prompts, None)
        assert err.value.field == "prompts"
