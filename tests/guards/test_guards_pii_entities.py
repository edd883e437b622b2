"""Per entity type: values that must be found, and near-misses that must not be."""

from __future__ import annotations

import pytest

from bastion.governance.guards import CustomPattern, DenyList, PiiConfig, PiiGuard


def _types(guard: PiiGuard, text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in guard.scan(text):
        out.setdefault(f.type, []).append(text[f.start : f.end])
    return out


POSITIVES = [
    ("EMAIL_ADDRESS", "Write to jane.doe+work@example.co.uk today", "jane.doe+work@example.co.uk"),
    ("EMAIL_ADDRESS", "Your email? JPLaursen@fleckens.hu", "JPLaursen@fleckens.hu"),
    ("PHONE_NUMBER", "Call me on +1-984-182-0190 tomorrow", "+1-984-182-0190"),
    ("PHONE_NUMBER", "My mobile is +44 7700 900123.", "+44 7700 900123"),
    ("PHONE_NUMBER", "phone: (415) 555-2671", "(415) 555-2671"),
    ("PHONE_NUMBER", "Reach the office at 030 1234567 after 9", "030 1234567"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "Charge 5500-0000-0000-0004 please", "5500-0000-0000-0004"),
    ("CREDIT_CARD", "amex 378282246310005", "378282246310005"),
    ("IBAN_CODE", "IBAN GB82 WEST 1234 5698 7654 32 for the refund", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN_CODE", "pay DE89370400440532013000 now", "DE89370400440532013000"),
    ("US_SSN", "SSN 123-45-6780 on file", "123-45-6780"),
    ("US_SSN", "my social security number is 536 22 8726", "536 22 8726"),
    ("IP_ADDRESS", "login from 192.168.10.42 failed", "192.168.10.42"),
    ("IP_ADDRESS", "host 2001:db8:85a3::8a2e:370:7334 is down", "2001:db8:85a3::8a2e:370:7334"),
    ("IP_ADDRESS", "ip 6e40:4041:c617:e898:c11:40d2:c669:2eb4", "6e40:4041:c617:e898:c11:40d2:c669:2eb4"),  # noqa: E501
    ("PERSON", "My name is Vanessa P. Hertzog and I need help", "Vanessa P. Hertzog"),
    ("PERSON", "Please forward this to Teresa Kreutzmann.", "Teresa Kreutzmann"),
    ("PERSON", "Dear Mr. Takáts, thank you", "Takáts"),
    ("LOCATION", "She moved to Amsterdam last year", "Amsterdam"),
    ("LOCATION", "We flew from New Zealand to Canada", "New Zealand"),
    ("STREET_ADDRESS", "Send it to 1668 Glyn Street, Springfield", "1668 Glyn Street, Springfield"),
    ("STREET_ADDRESS", "Kevin lives at Harjukuja 54, Seinäjoki", "Harjukuja 54, Seinäjoki"),
    ("STREET_ADDRESS", "Office: Rue de la Paix 12, Paris", "Rue de la Paix 12, Paris"),
    ("DATE_OF_BIRTH", "Date of birth: 12/04/1987", "12/04/1987"),
    ("DATE_OF_BIRTH", "She was born on March 3, 1990 in Oslo", "March 3, 1990"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "text", "value"), POSITIVES)
def test_true_positive(pii: PiiGuard, kind: str, text: str, value: str) -> None:
    found = _types(pii, text)
    assert value in found.get(kind, []), found


NEAR_MISSES = [
    ("CREDIT_CARD", "card 4111 1111 1111 1112 declined"),  # Luhn fails
    ("CREDIT_CARD", "tracking 1234567890123456"),
    ("IBAN_CODE", "IBAN GB82 WEST 1234 5698 7654 33"),  # mod-97 fails
    ("IBAN_CODE", "code DE00370400440532013000"),
    ("US_SSN", "SSN 000-12-3456"),  # area 000 never issued
    ("US_SSN", "SSN 666-12-3456"),
    ("US_SSN", "SSN 912-12-3456"),
    ("US_SSN", "SSN 123-00-4567"),
    ("US_SSN", "SSN 123-45-0000"),
    ("US_SSN", "ref 123-45 6789"),  # mixed separators
    ("IP_ADDRESS", "upgrade to version 1.2.3.4 today"),
    ("IP_ADDRESS", "released v10.0.0.1 last week"),
    ("IP_ADDRESS", "value 256.1.1.1 is not an address"),
    ("IP_ADDRESS", "section 1.2.3.4.5 of the spec"),
    ("IP_ADDRESS", "meet at 12:30:45 sharp"),
    ("PHONE_NUMBER", "Your order #1234567890 has shipped"),
    ("PHONE_NUMBER", "Order number 4155552671 is ready"),
    ("PHONE_NUMBER", "invoice 555-123-4567 attached"),
    ("PHONE_NUMBER", "the build id is 20231105123456"),
    ("PHONE_NUMBER", "on 2023-11-05 we met"),
    ("EMAIL_ADDRESS", "use the @handle on social media"),
    ("EMAIL_ADDRESS", "not an email: john@localhost"),
    ("PERSON", "The weather is nice today and the meeting went well."),
    ("PERSON", "The IP and the CEO of the USA met."),
    ("DATE_OF_BIRTH", "The invoice is dated 12/04/2023."),
]


@pytest.mark.parametrize(("kind", "text"), NEAR_MISSES)
def test_near_miss_is_not_reported(pii: PiiGuard, kind: str, text: str) -> None:
    found = _types(pii, text)
    assert kind not in found, found


def test_custom_patterns_and_deny_lists() -> None:
    guard = PiiGuard(
        PiiConfig(
            custom_patterns=(
                CustomPattern(type="EMPLOYEE_ID", pattern=r"\bEMP-\d{6}\b"),
                CustomPattern(type="ACCOUNT", pattern=r"\b\d{8}\b", context=("account", "acct")),
            ),
            deny_lists=(DenyList(type="PROJECT", values=("Bluebird", "Night Owl")),),
        )
    )
    found = _types(
        guard,
        "EMP-004211 moved Night owl to acct 12345678. Unrelated: the lottery drew 87654321 "
        "and bluebirds sang.",
    )
    assert found["EMPLOYEE_ID"] == ["EMP-004211"]
    assert found["ACCOUNT"] == ["12345678"]  # the other 8 digits lack context
    assert found["PROJECT"] == ["Night owl"]  # case-insensitive, whole words only


def test_allow_list_and_entity_filter() -> None:
    guard = PiiGuard(PiiConfig(allow_list=("support@example.com",), entities=("EMAIL_ADDRESS",)))
    found = _types(guard, "Mail support@example.com or jane@example.com, or call +1-984-182-0190")
    assert found == {"EMAIL_ADDRESS": ["jane@example.com"]}


def test_findings_carry_no_raw_value_in_evidence(pii: PiiGuard) -> None:
    text = "card 4111 1111 1111 1111, mail jane@example.com"
    for f in pii.scan(text):
        assert text[f.start : f.end] not in f.evidence
