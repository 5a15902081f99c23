"""`voice eval lm`'s reading report: answers grouped by how well the ears read the question."""

from __future__ import annotations

from voice.speechlm.evaluate import TurnResult, reading_report


def _result(i: int, question: str, spelled: str, text_ok: bool, spoken_ok: bool) -> TurnResult:
    return TurnResult(f"d{i}", 0, "math", "4", "m6", "it's 4", "it's 4", text_ok, spoken_ok, 0.0, 10,
                      spelled=spelled, question=question)


def test_answers_are_grouped_by_how_well_the_question_was_read() -> None:
    results = [
        _result(0, "What is 2 plus 2?", "what is 2 plus 2", True, True),          # read right (case, punctuation)
        _result(1, "What is 2 plus 2?", "what is 2 plus 2", False, False),        # read right, answered wrong
        _result(2, "What is two plus two, please?", "what is two plus two please", True, False),
        _result(3, "What is 2 plus 2 right now please?", "what is 2 plus 2 right now pleas", False, False),  # 1 of 8
        _result(4, "What is 2 plus 2?", "whats tu plas", False, False),           # most words wrong
    ]
    typed = [{"dialogue_id": f"d{i}", "turn": 0, "ok": ok} for i, ok in enumerate([True, True, True, True, False])]
    typed_read = [{"dialogue_id": f"d{i}", "turn": 0, "ok": ok} for i, ok in enumerate([True, False, True, True, False])]
    report = reading_report(results, typed, typed_read)
    assert list(report) == ["read right", "wer <= 0.2", "wer > 0.2", "all"]
    assert report["read right"] == {"n": 3, "text": 0.667, "spoken": 0.333, "typed": 1.0, "read_typed": 0.667}
    assert report["wer <= 0.2"] == {"n": 1, "text": 0.0, "spoken": 0.0, "typed": 1.0, "read_typed": 1.0}
    assert report["wer > 0.2"]["n"] == 1 and report["wer > 0.2"]["typed"] == 0.0
    assert report["all"]["n"] == 5 and report["all"]["text"] == 0.4 and report["all"]["read_typed"] == 0.6


def test_without_typed_answers_the_report_has_only_the_spoken_ones() -> None:
    report = reading_report([_result(0, "Hi there", "hi there", True, False)])
    assert report == {"read right": {"n": 1, "text": 1.0, "spoken": 0.0}, "all": {"n": 1, "text": 1.0, "spoken": 0.0}}
