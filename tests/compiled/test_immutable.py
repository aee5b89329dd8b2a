"""The hot path's value objects are immutable: a Decision is shared by every check that reuses
it (the decision cache), an Imei is its key. Their attributes are Final: mypy refuses an
assignment, and the compiled build has no setter for them."""

from __future__ import annotations

import pytest

from eir_compiled import finder
from gateway.classify import Classifier, Decision
from gateway.imei import Imei, parse_imei
from gateway.policy import Policy, Reason


def _decision() -> Decision:
    decision = Classifier(Policy()).classify_sync("352099001761481", "001010000000001", "01")
    assert isinstance(decision, Decision)
    return decision


@pytest.mark.skipif(
    finder.status() != finder.COMPILED,
    reason="interpreted build: Final attributes are enforced by mypy only (a setter that "
    "raises would cost every fresh check an object.__setattr__ per field)",
)
@pytest.mark.parametrize(
    ("make", "attribute", "value"),
    [
        (lambda: parse_imei("352099001761481"), "body", "35209900176149"),
        (lambda: parse_imei("352099001761481"), "given_check_digit", "2"),
        (lambda: parse_imei("352099001761481", "01"), "svn", "02"),
        (_decision, "status", None),
        (_decision, "decisive", Reason.BLACKLISTED),
        (_decision, "findings", ()),
        (_decision, "registry", None),
    ],
)
def test_assignment_raises(make: object, attribute: str, value: object) -> None:
    target = make()  # type: ignore[operator]
    before = getattr(target, attribute)
    with pytest.raises(AttributeError):
        setattr(target, attribute, value)
    assert getattr(target, attribute) == before


def test_imei_and_decision_keep_no_other_attributes() -> None:
    # __slots__ in both builds: a misspelt attribute is an error, not a new field.
    imei = parse_imei("352099001761481")
    assert isinstance(imei, Imei)
    for target in (imei, _decision()):
        with pytest.raises(AttributeError):
            target.tac_code = "35209900"  # type: ignore[union-attr]
