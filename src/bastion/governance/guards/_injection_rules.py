"""The injection guard's rules: heuristic patterns with per-boundary weights, their literal
anchors for the Aho-Corasick prefilter, and structural signals.

Owns what counts as evidence of an injected instruction and how much, in direct boundaries
(user input, where instructions are normal) and indirect ones (tool results and retrieved
documents). Does not own normalisation, the classifier or combining scores (``_injection``).
"""

from __future__ import annotations

import itertools
import operator
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    direct: float  # weight in user input, model output, tool arguments, logs
    indirect: float  # weight in tool results and retrieved documents


def _r(name: str, pattern: str, direct: float, indirect: float) -> Rule:
    # Rules run on lower-cased text: case-sensitive matching is several times faster in ``re``
    # than IGNORECASE. (The patterns use no upper-case escapes such as \S, so lowering is safe.)
    return Rule(name, re.compile(pattern.lower(), re.MULTILINE), direct, indirect)


_TARGET = (
    r"instructions?|rules|prompts?|directions?|guidelines|constraints|programming|"
    r"directives?|guardrails|restrictions|commands?|policies|training|"
    r"safety|filters?|what (?:you were|i) (?:told|said)|above|previous|prior|preceding|"
    r"foregoing|earlier"
)
# "Ignore previous instructions" in the languages attackers most often switch to.
_MULTILINGUAL_OVERRIDE = (
    r"ignore[rz]? (?:les |toutes les )?(?:instructions|consignes) pr[ée]c[ée]dentes|"
    r"oubliez? (?:les |toutes les )?instructions|"
    r"ignora (?:las |todas las )?instrucciones|olvida (?:las |todas las )?instrucciones|"
    r"ignor[ae] (?:as |todas as )?instru[çc][õo]es|esque[çc]a (?:as )?instru[çc][õo]es|"
    r"ignora (?:le |tutte le )?istruzioni|dimentica (?:le )?istruzioni|"
    r"ignorier(?:e|en sie)? (?:alle |die )?(?:vorherigen |bisherigen |obigen )?anweisungen|"
    r"vergessen sie (?:alle )?(?:vorherigen )?anweisungen|vergiss (?:alle )?anweisungen|"
    r"игнорир\w{0,6} (?:все )?(?:предыдущие )?инструкци\w{0,3}|забудь\w{0,2} (?:все )?инструкци|"
    r"이전 지시|지시사항을 무시|以前の指示|指示を無視|無視して|"
    r"忽略(?:之前|以前|上面)?的?(?:所有)?指令|"
    r"忽略(?:之前|以前)|تجاهل (?:جميع )?التعليمات|पिछले निर्देशों को अनदेखा"
)
RULES: tuple[Rule, ...] = (
    _r(
        "override",
        rf"\b(?:ignore|disregard|forget|override|bypass|skip|abandon|neglect|discard|overlook)"
        rf"\b[^.\n]{{0,40}}?\b(?:{_TARGET})\b",
        0.9,
        0.95,
    ),
    _r("override_multilingual", _MULTILINGUAL_OVERRIDE, 0.9, 0.95),
    _r(
        "ignore_and_say",
        r"\b(?:ignore|disregard|forget)\b[^.\n]{0,40}?\band\s(?:instead\s)?(?:say|state|output|"
        r"respond|print|reply|tell|write|answer|return|claim|give)\b",
        0.8,
        0.9,
    ),
    _r(
        "authority_claim",
        r"\b(?:i am|i'm|this is)\s(?:your|the|a|an)\s(?:\w{1,15}\s)?(?:developer|creator|admin|"
        r"administrator|owner|president|police officer|officer|ceo|god|system|sysadmin|"
        r"supervisor|programmer|operator|security (?:team|auditor|officer)|agent)\b",
        0.45,
        0.6,
    ),
    _r(
        "obey_me",
        r"\b(?:i am|i'm) (?:god|your (?:master|god|owner|creator))\b|\byou (?:have to|must|will|"
        r"shall) (?:now )?(?:answer|obey|listen to|follow|comply with) (?:all |every one )?"
        r"(?:of )?my (?:questions|instructions|commands|orders|rules)\b|\byou (?:must|will) obey\b",
        0.6,
        0.7,
    ),
    _r(
        "topic_switch",
        r"\b(?:forget (?:about )?(?:that|this|it|everything)|scratch that|never mind that)\b|"
        r"\b(?:actually|wait),?\s[^.\n]{0,80}?\binstead\b",
        0.45,
        0.5,
    ),
    _r(
        "scripted_claim",
        r"\b(?:let's|let us|we (?:might|could|should|can|will|must))\s(?:\w{1,12}\s)?(?:say|state|"
        r"assume|admit|claim|declare|pretend)\b",
        0.2,
        0.55,
    ),
    _r(
        "pretext",
        r"\b(?:security audit|system (?:upgrade|update|check)|maintenance|penetration test|"
        r"for (?:this|the|an) (?:audit|investigation|upgrade|test|emergency)|"
        r"safety of the country|matter of life and death)\b",
        0.3,
        0.4,
    ),
    _r(
        "hypothetical_frame",
        r"\b(?:imagine (?:we|you|that|a world)|suppose (?:we|you|that)|hypothetically|"
        r"in a (?:world|universe|future|scenario) where|in a parallel universe|let's pretend|"
        r"let us pretend|for a (?:story|novel|movie script)|in this (?:scenario|future|world))\b",
        0.3,
        0.3,
    ),
    _r(
        "sensitive_request",
        r"\b(?:tell me|give me|share|what is|what's|what are|reveal|provide|list|confirm|"
        r"send me|show me|write|spell)\b[^.?\n]{0,50}?\b(?:birth ?(?:date|year|day)|"
        r"date of birth|e-?mail address|home address|city of residence|phone number|"
        r"bank balance|password|passcode|social security|ssn|salary|credit card|initials|"
        r"secret key|api key|location|lives?)\b",
        0.4,
        0.5,
    ),
    _r(
        "third_party_data",
        r"\b(?:the|other|another|all|every)\s(?:user|users|customer|customers|employee|"
        r"employees|patient|patients)(?:'s|s'|s)?\s(?:\w{1,15}\s){0,2}(?:e-?mail|address|"
        r"password|birth|name|initials|phone|balance|location|city|residence|data|"
        r"information|details|ssn|records?)",
        0.55,
        0.6,
    ),
    _r(
        "secret_object",
        r"\b(?:the|your|our|system|admin|master|secret|la|il|le|el|das|die|tu|su|votre|ton|"
        r"dein|ihr)\s(?:password|passcode|passphrase|"
        r"secret key|secret code|secret word|api key|pin code|access code|credentials)\b",
        0.5,
        0.6,
    ),
    _r(
        "secret_word_multilingual",
        r"\b(?:contraseña|clave secreta|mot de passe|senha|passwort|kennwort|parola d'ordine|"
        r"wachtwoord|hasło|lösenord|adgangskode|пароль|секретн\w{0,4} ключ)|비밀번호|암호|"
        r"パスワード|密码|密碼|口令|كلمة (?:السر|المرور)|पासवर्ड",
        0.5,
        0.6,
    ),
    _r(
        "obfuscated_output",
        r"\b(?:in reverse(?:d)? order|backwards|separated by (?:a |an )?\w{1,10}|acrostic|"
        r"first letter of each|pig latin|in base64|encode[d]? (?:it |them |each part )?"
        r"(?:in|using|with|as) (?:base64|hex|rot13|binary|morse)|morse code|interlace)\b",
        0.3,
        0.45,
    ),
    _r(
        "payload_split",
        r"\b[a-z]\s?=\s?[a-z]\s?\+\s?[a-z]\b|\b(?:three|two|four) strings\b|"
        r"\bconcatenat\w{0,5} (?:the|these) (?:strings|parts|words)\b",
        0.5,
        0.6,
    ),
    _r(
        "state_output",
        r"\b(?:state|say|claim|respond|answer|report|pretend)(?: that)? the "
        r"(?:output|answer|result) (?:is|was|should be)\b|\bconsider the output (?:as|to be)\b",
        0.5,
        0.7,
    ),
    _r(
        "decode_request",
        r"\b(?:decode|decrypt|translate|convert) (?:this|the following|these)\s(?:\w{1,12}\s)?"
        r"(?:string|text|message|code|bytes|binary|hex|base64|cipher)",
        0.35,
        0.5,
    ),
    _r(
        "prior_reference",
        r"\b(?:previous|prior|above|earlier|preceding|original|initial|system|developer)\s"
        r"(?:instructions?|prompts?|rules|directives?|guidelines)\b",
        0.45,
        0.7,
    ),
    _r(
        "new_instructions",
        r"\b(?:new|updated|real|actual|additional|important|revised|secret|hidden|override)\s"
        r"(?:instructions?|task|directives?|orders?|rules|objective)\b",
        0.45,
        0.75,
    ),
    _r(
        "identity_change",
        r"\byou\s(?:are|will be|shall be)\s(?:now|no longer)\b|\bfrom now on\b|\bact as\b|"
        r"\bpretend\s(?:to be|that|you)\b|\brole-?play\b|\bimagine (?:you|that you)\b|"
        r"\bstay in character\b|\byour new (?:name|role|persona|identity)\b",
        0.5,
        0.7,
    ),
    _r(
        "jailbreak_mode",
        r"\b(?:DAN|jailbreak\w{0,4}|developer mode|dev mode|god mode|sudo mode|admin(?:istrator)?"
        r" mode|system mode|debug mode|maintenance mode|unrestricted mode|unfiltered mode|"
        r"do anything now|test mode|safe mode (?:off|disabled)|override mode|enforcement mode|"
        r"emergency mode|privileged mode|root mode|superuser mode|\w{1,12} data override)\b",
        0.8,
        0.85,
    ),
    _r(
        "no_limits",
        r"\b(?:without|no|free (?:of|from)|remove|disable|turn off)\s(?:any\s|all\s|your\s)?"
        r"(?:special\s)?(?:restrictions|limitations|limits|filter(?:s|ing)|censorship|"
        r"ethical (?:guidelines|constraints)|"
        r"safety (?:guidelines|measures|filters))\b",
        0.5,
        0.6,
    ),
    _r(
        "prompt_leak",
        r"\b(?:reveal|show|print|repeat|display|output|tell|give|share|leak|disclose|spell|"
        r"write out|recite|what(?:'s| is| are| was))\b[^.\n?]{0,30}?\b(?:system prompt|"
        r"(?:your|the|initial|original|hidden|secret)\s(?:prompt|instructions|rules|password|"
        r"passcode|key|secret|code word|configuration|guidelines))\b",
        0.7,
        0.8,
    ),
    _r(
        "secret_request",
        r"\b(?:secret|password|passcode|passphrase|api key|private key|credentials?|access code)"
        r"\b[^.\n]{0,20}?\b(?:is|are|was)?\s?\?",
        0.35,
        0.5,
    ),
    _r(
        "role_marker",
        r"^[ \t>#*]{0,8}(?:system|assistant|developer|admin)\s?(?:message|prompt|note)?\s?:",
        0.4,
        0.7,
    ),
    _r(
        "chat_template",
        r"<\|im_start\|>|<\|im_end\|>|\[/?INST\]|<</?SYS>>|<\|(?:system|user|assistant|"
        r"endoftext|eot_id|start_header_id)\|>|</?(?:system|instructions?|admin)>",
        0.85,
        0.9,
    ),
    _r(
        "tool_call_syntax",
        r"\"(?:tool_calls|function_call)\"\s?:|<(?:tool_call|function_calls?|invoke)\b|"
        r"\"name\"\s?:\s?\"[\w.\-]{1,64}\"\s?,\s?\"(?:arguments|parameters)\"\s?:",
        0.3,
        0.8,
    ),
    _r(
        "markdown_image_exfil",
        r"!\[[^\]\n]{0,200}\]\(\s?https?://[^\s)]{1,300}\?[^\s)]{1,1000}\)",
        0.6,
        0.9,
    ),
    _r("html_image_exfil", r"<img\b[^>]{0,300}\bsrc=[\"']?https?://[^\s\"'>]{1,300}\?", 0.5, 0.8),
    _r(
        "send_to",
        r"\b(?:send|post|upload|forward|transmit|exfiltrate|submit|email|leak)\b[^.\n]{0,60}?"
        r"\b(?:to|at)\s(?:https?://|[\w.+\-]{1,64}@[\w\-]{1,63}\.)",
        0.45,
        0.75,
    ),
    _r(
        "address_ai",
        r"\b(?:AI|assistant|chatbot|language model|LLM|GPT|ChatGPT|Claude|Bard|Gemini|Copilot)"
        r"\b\s?[,:]\s?(?:please\s)?(?:ignore|you|do|don't|stop|instead|now|write|say|respond|"
        r"answer|include|add|tell|print|output|append)\b",
        0.2,
        0.75,
    ),
    _r(
        "your_response",
        r"\b(?:in|to|into|at the (?:end|beginning|start) of|within|throughout) your (?:response|"
        r"answer|reply|summary|output|message|completion)\b",
        0.15,
        0.75,
    ),
    _r(
        "alter_your_answer",
        r"\b(?:modify|augment|enhance|amend|alter|adjust|tweak|provide|render|rearrange|scramble|"
        r"remove|group|format|rewrite|phrase|structure|present|deliver|encode|end|begin|start|"
        r"conclude|finish|sign)\b[^.\n]{0,40}?\byour (?:reply|response|answer|output|"
        r"completion|summary)\b",
        0.2,
        0.65,
    ),
    _r(
        "inject_code",
        r"\b(?:add|include|insert|incorporate|integrate|merge|embed|append|introduce|ensure|put)"
        r"\b[^.\n]{0,60}?\b(?:code|snippet|excerpt|block|section|lines?)\b[^.\n]{0,40}?"
        r"\b(?:in|into|within|to|inside) your\b",
        0.3,
        0.8,
    ),
    _r(
        "when_you_read",
        r"\bwhen (?:you|the (?:assistant|AI|model|bot)) (?:read|summari[sz]e|process|respond|"
        r"answer|reply|see|parse)\b|\bif you are an? (?:AI|assistant|language model|LLM)\b",
        0.3,
        0.8,
    ),
    _r(
        "instead_do",
        r"\b(?:instead|rather),? (?:you (?:should|must|will)|respond|reply|say|write|output|"
        r"only (?:say|respond|reply|output))\b",
        0.35,
        0.6,
    ),
    _r(
        "conceal",
        r"\b(?:do not|don't|never)\s(?:tell|inform|mention|reveal|let|alert|notify)\b[^.\n]{0,30}?"
        r"\b(?:the user|user|anyone|them|the human)\b",
        0.3,
        0.65,
    ),
    _r(
        "html_comment_instruction",
        r"<!--[^>]{0,500}?\b(?:ignore|instructions?|assistant|AI|you must|system)\b",
        0.5,
        0.8,
    ),
    _r(
        "decode_and_follow",
        r"\b(?:decode|decrypt|base64|rot13|hex|reverse)\b[^.\n]{0,40}?\b(?:and|then)\s"
        r"(?:follow|execute|run|do|obey|perform|answer)\b",
        0.6,
        0.7,
    ),
)

# Literal fragments, one of which must occur (in the lower-cased text) for a rule's regex to be
# worth running. One Aho-Corasick pass finds them all, so a benign text runs few regexes; this
# is what keeps the guard near 1 ms per KB. A rule missing here always runs.
ANCHORS: dict[str, tuple[str, ...]] = {
    "override": ("ignor", "disregard", "forget", "overrid", "bypass", "skip", "abandon",
                 "neglect", "discard", "overlook"),
    "override_multilingual": ("ignor", "oubli", "olvida", "esque", "dimentica", "vergiss",
                              "vergessen", "игнорир", "забуд", "지시", "指示", "無視", "忽略",
                              "تجاهل", "अनदेखा"),
    "ignore_and_say": ("ignor", "disregard", "forget"),
    "authority_claim": ("i am", "i'm", "this is"),
    "obey_me": ("i am", "i'm", "you have to", "you must", "you will", "you shall"),
    "topic_switch": ("forget", "scratch that", "never mind", "instead"),
    "scripted_claim": ("let's", "let us", "we might", "we could", "we should", "we can",
                       "we will", "we must"),
    "pretext": ("audit", "system up", "system check", "maintenance", "penetration", "for this",
                "for the", "for an", "safety of", "life and death"),
    "hypothetical_frame": ("imagine", "suppose", "hypothetical", "world", "universe", "future",
                           "scenario", "pretend", "for a "),
    "sensitive_request": ("birth", "mail", "address", "residence", "phone", "balance", "pass",
                          "social security", "ssn", "salary", "credit card", "initials",
                          "secret key", "api key", "location", "live"),
    "third_party_data": ("user", "customer", "employee", "patient"),
    "secret_object": ("password", "passcode", "passphrase", "secret key", "secret code",
                      "secret word", "api key", "pin code", "access code", "credentials"),
    "secret_word_multilingual": ("contraseña", "clave secreta", "mot de passe", "senha",
                                 "passwort", "kennwort", "parola d'ordine", "wachtwoord",
                                 "hasło", "lösenord", "adgangskode", "пароль", "секретн",
                                 "비밀번호", "암호", "パスワード", "密码", "密碼", "口令",
                                 "كلمة", "पासवर्ड"),
    "obfuscated_output": ("revers", "backwards", "separated by", "acrostic", "first letter",
                          "pig latin", "base64", "encode", "morse", "interlace"),
    "payload_split": ("+", "strings", "concatenat"),
    "state_output": ("the output", "the answer", "the result", "consider the output"),
    "decode_request": ("decode", "decrypt", "translate", "convert"),
    "prior_reference": ("instruction", "prompt", "rules", "directive", "guideline"),
    "new_instructions": ("instruction", "task", "directive", "order", "rules", "objective"),
    "identity_change": ("you are", "you will be", "you shall be", "from now on", "act as",
                        "pretend", "role", "imagine", "character", "your new"),
    "jailbreak_mode": ("dan", "jailbreak", "mode", "anything now", "override"),
    "no_limits": ("restriction", "limitation", "limits", "filter", "censorship", "ethical",
                  "safety"),
    "prompt_leak": ("prompt", "instruction", "rules", "pass", "key", "secret", "code word",
                    "configuration", "guidelines"),
    "secret_request": ("secret", "pass", "api key", "private key", "credential", "access code"),
    "role_marker": ("system", "assistant", "developer", "admin"),
    "chat_template": ("<|", "[inst", "[/inst", "<<sys", "<</sys", "<system", "</system",
                      "<instruction", "</instruction", "<admin", "</admin"),
    "tool_call_syntax": ("tool_calls", "function_call", "<tool_call", "<function_call", "<invoke",
                         '"name"'),
    "markdown_image_exfil": ("![",),
    "html_image_exfil": ("<img",),
    "send_to": ("send", "post", "upload", "forward", "transmit", "exfiltrat", "submit", "mail",
                "leak"),
    # address_ai: see _ADDRESSED below.
    "your_response": ("your response", "your answer", "your reply", "your summary",
                      "your output", "your message", "your completion"),
    "inject_code": ("in your", "to your", "inside your"),
    "alter_your_answer": ("your reply", "your response", "your answer", "your output",
                          "your completion", "your summary"),
    "when_you_read": ("when you", "when the", "if you are"),
    "instead_do": ("instead", "rather"),
    "conceal": ("do not", "don't", "never"),
    "html_comment_instruction": ("<!--",),
    "decode_and_follow": ("decode", "decrypt", "base64", "rot13", "hex", "revers"),
}  # fmt: skip


#: address_ai needs an assistant's name right before a comma or colon (with at most one
#: whitespace character between them, as ``\s?`` allows): every such pair is an anchor, so a
#: text that merely contains "ai" (in "said", "mail") does not run the rule.
_AI_NAMES = ("ai", "assistant", "chatbot", "language model", "llm", "gpt", "claude", "bard",
             "gemini", "copilot")  # fmt: skip
# What ``\s`` matches in a str pattern is ``str.isspace``; no such character lies above U+3000.
_WHITESPACE = ("", *(c for c in map(chr, range(0x3001)) if c.isspace()))
ANCHORS["address_ai"] = tuple(n + w + p for n in _AI_NAMES for w in _WHITESPACE for p in ",:")

# A second set of literal fragments for rules whose first set is common words: one of these
# must occur as well (each is a literal every match of the rule contains).
ALSO_ANCHORS: dict[str, tuple[str, ...]] = {
    "override": ("instruction", "rules", "prompt", "direction", "guideline", "constraint",
                 "programming", "directive", "guardrail", "restriction", "command", "policies",
                 "training", "safety", "filter", "what ", "above", "previous", "prior",
                 "preceding", "foregoing", "earlier"),
    "new_instructions": ("new", "updated", "real", "actual", "additional", "important",
                         "revised", "secret", "hidden", "override"),
    "secret_request": ("?",),
    "send_to": ("http", "@"),
    "inject_code": ("code", "snippet", "excerpt", "block", "section", "line"),
    "sensitive_request": ("tell me", "give me", "share", "what is", "what's", "what are",
                          "reveal", "provide", "list", "confirm", "send me", "show me", "write",
                          "spell"),
    # "a=b+c" holds "=", the other two ways hold their own words.
    "payload_split": ("=", "strings", "concatenat"),
    "prompt_leak": ("reveal", "show", "print", "repeat", "display", "output", "tell", "give",
                    "share", "leak", "disclose", "spell", "write out", "recite", "what"),
}  # fmt: skip


def _anchor_automaton() -> Any:
    import ahocorasick

    automaton = ahocorasick.Automaton()
    table: dict[str, set[int]] = {}
    for i, rule in enumerate(RULES):
        for anchor in ANCHORS.get(rule.name, ()):
            table.setdefault(anchor, set()).add(i)
        for anchor in ALSO_ANCHORS.get(rule.name, ()):
            table.setdefault(anchor, set()).add(_SECOND + i)
    for anchor, idxs in table.items():
        automaton.add_word(anchor, frozenset(idxs))
    automaton.make_automaton()
    return automaton


#: A hit of rule i's second set of anchors is recorded as ``_SECOND + i``.
_SECOND = 1 << 16
_FIRST_IDS = frozenset(range(len(RULES)))
_ALWAYS = frozenset(i for i, r in enumerate(RULES) if r.name not in ANCHORS)
_NEED_BOTH = frozenset(i for i, r in enumerate(RULES) if r.name in ALSO_ANCHORS)
_OF_SECOND = {_SECOND + i: i for i in _NEED_BOTH}
_AUTOMATON = _anchor_automaton()
_PAYLOAD = operator.itemgetter(1)


def triggered_rules(low: str) -> list[Rule]:
    """Rules whose anchors occur in ``low`` (plus anchor-less ones), in declaration order."""
    hit = set(itertools.chain.from_iterable(map(_PAYLOAD, _AUTOMATON.iter(low))))
    first = (hit & _FIRST_IDS) | _ALWAYS
    second = set(map(_OF_SECOND.__getitem__, hit - _FIRST_IDS))
    ready = (first - _NEED_BOTH) | (first & second)
    return list(map(RULES.__getitem__, sorted(ready)))


ROT13_RULES = frozenset(
    {"override", "ignore_and_say", "prior_reference", "new_instructions", "jailbreak_mode"}
)
_QA_MARK = re.compile(r"(?:^|\s)(?:Q|Question|A|Answer)\s?:", re.IGNORECASE)
_MAX_TOKENS_CHECKED = 50_000
_SEVEN_EQUAL = b"\x01" * 7


def structural(text: str) -> list[tuple[str, float, float]]:
    """Shape signals no single phrase shows: repeated-token floods and few-shot scripts."""
    out: list[tuple[str, float, float]] = []
    toks = text.split(maxsplit=_MAX_TOKENS_CHECKED)[:_MAX_TOKENS_CHECKED]
    # Eight equal tokens in a row are seven equal neighbours in a row; compared in C, one byte
    # per pair of neighbours.
    if _SEVEN_EQUAL in bytes(map(operator.eq, toks, itertools.islice(toks, 1, None))):
        out.append(("repeated_token", 0.5, 0.5))
    # Every Q/A mark holds a colon: under four colons there cannot be four marks.
    if text.count(":", 0, 20_000) >= 4 and len(_QA_MARK.findall(text, 0, 20_000)) >= 4:
        out.append(("few_shot_script", 0.4, 0.5))
    return out
