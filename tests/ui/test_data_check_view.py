"""The Data tab shows what is trained: the data check's warnings above the table, and the selected
row's tokens with the trained ones highlighted (the worker runs engine/datacheck on the real
tokenizer of a tiny Llama)."""

import json

import pytest

import tiny
from lora_studio.config import DataConfig, ModelConfig
from lora_studio.ui.data_check import TokenRow, token_html
from lora_studio.ui.style import LIGHT

ROWS = [{"prompt": f"the quick brown fox {i}", "completion": " jumps over the lazy dog" * (1 + 4 * (i == 2))}
        for i in range(5)]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny.llama_gguf_folder(tmp_path_factory.mktemp("llama"))


def open_view(qtbot, model, data, max_length):
    from lora_studio.ui.data_view import DataView
    from lora_studio.ui.session import Draft, Session

    session = Session(Draft(model=ModelConfig(path=str(model), task="causal-lm"),
                            data=DataConfig(path=str(data), max_length=max_length, validation_split=0.0)))
    view = DataView(session)
    qtbot.addWidget(view)
    view.show()
    session.load_model()
    session.refresh_data()
    qtbot.waitUntil(lambda: view.trained.check is not None, timeout=60_000)
    return session, view


def test_warnings_above_the_table_and_trained_tokens_marked(qtbot, llama, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    session, view = open_view(qtbot, llama, data, 30)  # through the chat template: the prompt turn is 22 tokens
    trained = view.trained
    assert trained.warnings.isVisible() and "[answer_truncated]" in trained.warnings.text()
    assert "5 rows" not in trained.warnings.text() and "1 row (3)" in trained.warnings.text()
    view.table.selectRow(1)
    assert trained.row == 2
    row = trained.check.rows[2]
    text = trained.tokens.toPlainText()
    assert "row 2:" in text and f"{sum(row.trained)} of {len(row.pieces)} tokens trained" in text
    # the space after the template's "assistant:" and the completion's own leading space start the answer
    assert "".join(p for p, m in zip(row.pieces, row.trained) if m) == "  jumps over the lazy dog</s>"
    view.table.selectRow(2)
    assert "cut at 30 tokens" in trained.tokens.toPlainText()

    with qtbot.waitSignal(session.data_stats, timeout=60_000):
        session.set_data(max_length=256)  # long enough: the warning goes
    qtbot.waitUntil(lambda: trained.check is not None and trained.check.max_length == 256, timeout=60_000)
    assert not trained.warnings.isVisible() and "Trained tokens per row" in trained.summary.text()


def test_token_html_highlights_exactly_the_trained_tokens():
    row = TokenRow(1, True, ["Q", ":", " a", " b", "</s>"], [False, False, True, True, True])
    html = token_html(row, max_length=4, theme="light")
    trained_spans = html.count("color:#ffffff")
    assert trained_spans == 3 and html.count(f"color:{LIGHT['muted']}") == 2
    assert html.index("✂") < html.index("&lt;/s&gt;")  # the cut is marked before the 5th token
