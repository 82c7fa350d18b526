"""The fast path of the privacy guard: pattern recognizers with checks, pure Python.

Each recognizer finds candidates with a regular expression, then keeps only those that pass a
check (Luhn for cards, mod-97 for IBANs, a parse for IP addresses, the issuing rules for US social
security numbers, a real calendar date near a birth word for dates of birth). They need nothing
but the standard library, so the guard works, fast, without Presidio or spaCy installed.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entity: str
    score: float
    source: str = "pattern"

    def value(self, text: str) -> str:
        return text[self.start : self.end]


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# IBAN lengths by country (ISO 13616 registry); an unknown country still needs mod-97 to pass
IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VG": 24,
    "XK": 20,
}


def iban_ok(raw: str) -> bool:
    s = re.sub(r"[\s-]", "", raw).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s):
        return False
    if IBAN_LENGTHS.get(s[:2], len(s)) != len(s):
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def ssn_ok(raw: str) -> bool:
    d = re.sub(r"\D", "", raw)
    if len(d) != 9 or len(set(d)) == 1:
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


_MONTHS = {
    m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])
}


def _date_ok(y: int, m: int, d: int) -> bool:
    try:
        day = _dt.date(y, m, d)
    except ValueError:
        return False
    return 1900 <= y and day <= _dt.date.today()


def birth_date_ok(raw: str) -> bool:
    s = raw.lower()
    nums = [int(x) for x in re.findall(r"\d+", s)]
    word = re.search(r"[a-z]{3,}", s)
    if word:  # "12 March 1985", "March 12, 1985"
        month = _MONTHS.get(word.group()[:3])
        if month is None or len(nums) != 2:
            return False
        day, year = (nums[0], nums[1]) if nums[1] > 31 else (nums[1], nums[0])
        return _date_ok(year, month, day)
    if len(nums) != 3:
        return False
    a, b, c = nums
    if a > 31:  # 1985-03-12
        return _date_ok(a, b, c)
    if c < 100:
        c += 1900 if c > _dt.date.today().year % 100 else 2000
    return _date_ok(c, b, a) or _date_ok(c, a, b)  # day-first or month-first


_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_id_ok(raw: str) -> bool:
    """A mainland resident identity card number: 18 characters, a real birth date in positions
    7-14, and the ISO 7064 MOD 11-2 check character (0-9 or X) last."""
    s = raw.upper()
    if len(s) != 18 or not s[:17].isdigit():
        return False
    if not _date_ok(int(s[6:10]), int(s[10:12]), int(s[12:14])):
        return False
    total = sum(int(c) * w for c, w in zip(s[:17], _CN_ID_WEIGHTS))
    return "10X98765432"[total % 11] == s[17]


def ip_ok(raw: str) -> bool:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        return False
    return True


def _phone_ok(raw: str) -> bool:
    return 8 <= len(re.sub(r"\D", "", raw)) <= 15 and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw)


_BIRTH_WORDS = re.compile(r"\b(?:born|birth|birthday|dob|d\.o\.b|date of birth|geboren|né|née)\b", re.I)
_PHONE_WORDS = re.compile(
    r"\b(?:phone|call|ring|tel|telephone|mobile|cell|number|text me|sms|whatsapp|wechat|viber|signal|fax|"
    r"reach|contact|handy|telefon|tél|tel\.)",
    re.I,
)

# words that make a run of digits an identifier rather than a phone number (unless a phone word
# is nearer): "order number 12345678", "tracking 0123 456789", "invoice no. 2024 1234"
_NOT_PHONE_WORDS = re.compile(
    r"\b(?:order|tracking|invoice|ref|reference|account|acct|ticket|case|id|customer|member|parcel|"
    r"shipment|serial|sku|item|product|transaction|booking|reservation|confirmation|room|flight|"
    r"model|version|po|iban|card|pin|code|otp)\b"
    # Chinese: order, tracking, waybill, express, ticket, serial, statement, code, amount, card/account number
    r"|订单|单号|运单|快递|工单|编号|流水号|验证码|金额|卡号|账号|发票",
    re.I,
)
# a phone word strong enough for a bare run of digits ("number" alone is not); the substrings one
# of which a text must hold for that recognizer to run at all
_STRONG_WORDS = (  # plain substrings, checked before the expression runs ("tel" alone is in "tell")
    "phone", "call", "ring me", "ring us", " tel", "tel:", "tel.", "mobile", "cell", "text me", "sms",
    "whatsapp", "wechat", "viber", "fax", "handy", "telefon", "tél", "reach", "contact",
)  # fmt: skip
_PHONE_STRONG = re.compile(
    r"\b(?:phone|call|ring|tel|telephone|mobile|cell|cellphone|text me|sms|whatsapp|wechat|viber|fax|"
    r"handy|telefon|tél|reach|contact)"
    # Chinese: mobile, telephone, landline, call, dial, contact, WeChat
    r"|手机|电话|座机|致电|拨打|联系|微信",
    re.I,
)

_MONTH_NAMES = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)


@dataclass(frozen=True)
class Recognizer:
    entity: str
    pattern: re.Pattern
    score: float
    check: Callable[[str], bool] | None = None
    context: re.Pattern | None = None  # words that raise the score when they precede the match
    context_score: float = 0.0
    needs_context: bool = False  # no context word, no finding
    trim: str = ""  # characters stripped from the end of a match (URL punctuation)
    shrink: bool = False  # a match that fails its check is retried without its trailing groups
    avoid: re.Pattern | None = None  # words that, nearer than any context word, drop the finding
    # cheap necessary conditions, tested before the regular expression runs: the fewest digits a
    # kept finding has, and substrings one of which the lower-cased text must contain
    min_digits: int = 0
    needs: tuple[str, ...] = ()
    group: int = 0  # the match group that is the finding (the rest is context that must be there)


# mainland China: names and addresses, found by their context (no NER model for Chinese loads
# offline here; see docs/guide/privacy.md). The ~100 most common surnames cover most people.
_CN_SURNAME = (
    "(?:欧阳|司马|诸葛|上官|东方|慕容|令狐|皇甫|司徒|"
    "[王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤])"
)
# a given name of one or two characters; the second is not a function character that starts the
# rest of the sentence ("我叫张伟想问一下")
_CN_GIVEN = "[\u4e00-\u9fff](?:(?![的了是在想要和与请问吗呢吧啊也就都还有我你他她们，。！？、])[\u4e00-\u9fff])?"
_CN_NAME_CONTEXT = "(?:我叫|我的名字是|名字是|名字叫|姓名|联系人|收件人|收货人|持卡人|户名|开户名|账户名)[:：]?\\s*"
_CN_PLACE = "[\u4e00-\u9fff]{1,12}?(?:路|街|大街|大道|巷|弄|胡同)(?:[一二三四五六七八九十\\d]{1,3}段)?[东南西北中]?\\d{1,5}(?:号|弄)"
_CN_UNIT = "(?:\\d{1,5}(?:号楼|栋|幢|单元|楼|层|室|号))*"

RECOGNIZERS: list[Recognizer] = [
    Recognizer(
        "EMAIL_ADDRESS",
        re.compile(  # letters of any script (RFC 6531 addresses: jörg@bücher.de)
            r"(?<![\w.+-])[^\W_](?:[\w.%+-]{0,63})@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"
            r"[^\W\d_]{2,24}(?![\w-])"
        ),
        0.95,
        needs=("@",),
    ),
    Recognizer(  # a CJK local part or domain written against CJK text ("邮箱是客服3@例子.中国"): the whole
        # run of CJK letters before the "@" is taken (it cannot be told from the address), never less
        "EMAIL_ADDRESS",
        re.compile(
            r"[\u3400-\u9fff][\u3400-\u9fffA-Za-z0-9._%+-]{0,63}@(?:[\u3400-\u9fffA-Za-z0-9-]{1,63}\.)+"
            r"(?:[A-Za-z]{2,24}(?![A-Za-z0-9-])|[\u3400-\u9fff]{2,4})"
            r"|(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[\u3400-\u9fffA-Za-z0-9-]{1,63}\.)*"
            r"[\u3400-\u9fff][\u3400-\u9fffA-Za-z0-9-]{0,62}\.(?:[A-Za-z]{2,24}(?![A-Za-z0-9-])|[\u3400-\u9fff]{2,4})"
        ),
        0.95,
        needs=("@",),
    ),
    Recognizer(  # an ASCII address written against CJK text ("邮箱是li@qq.com吧"): no word boundary there
        "EMAIL_ADDRESS",
        re.compile(
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
            r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
        ),
        0.95,
        needs=("@",),
    ),
    Recognizer(
        # no \b before it: after a CJK character ("链接http://…") there is no word boundary; CJK and
        # full-width punctuation end it (a host or path may hold CJK letters: http://例子.中国/订单)
        "URL",
        re.compile(r"(?<![A-Za-z0-9])(?:https?://|www\.)[^\s<>\"'`\u3000-\u303f\uff01-\uff0f\uff1a-\uff20]+", re.I),
        0.85,
        trim=".,;:!?)]}'\"",
        needs=("http", "www."),
    ),
    Recognizer(
        "CREDIT_CARD",
        # no card number starts with 00 or follows a "+": those are international phone numbers
        # (0086 138…, +86 138-…)
        re.compile(r"(?<![\d+-])(?!00)\d(?:[ -]?\d){12,18}(?![\d-])"),
        0.9,
        check=lambda s: luhn_ok(re.sub(r"\D", "", s)) and len(set(re.sub(r"\D", "", s))) > 1,
        min_digits=13,
    ),
    Recognizer(
        "CREDIT_CARD",
        # dots, underscores or slashes, the same one throughout, in any grouping a card is written in
        # (4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4, ...): 13 to 19 digits in all
        re.compile(r"(?<![\d./_-])\d{4}([./_])\d{4,6}(?:\1\d{1,7}){1,3}(?![\d./_-])"),
        0.9,
        check=lambda s: (
            13 <= len(re.sub(r"\D", "", s)) <= 19
            and luhn_ok(re.sub(r"\D", "", s))
            and len(set(re.sub(r"\D", "", s))) > 1
        ),
        min_digits=13,
    ),
    Recognizer(
        "IBAN_CODE",
        re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}\b"),
        0.95,
        check=iban_ok,
        shrink=True,
        min_digits=2,
    ),
    Recognizer(
        "IP_ADDRESS", re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)"), 0.85, check=ip_ok, min_digits=4
    ),
    Recognizer(
        "IP_ADDRESS",
        re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}(?::|[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{1,4}){0,6}(?![\w:])"),
        0.85,
        check=lambda s: ":" in s and ip_ok(s),
        needs=(":",),
    ),
    Recognizer("US_SSN", re.compile(r"(?<![\d-])\d{3}[- ]\d{2}[- ]\d{4}(?![\d-])"), 0.85, check=ssn_ok, min_digits=9),
    Recognizer(
        "US_SSN",
        re.compile(r"(?<![\w-])\d{9}(?![\w-])"),
        0.3,
        check=ssn_ok,
        context=re.compile(r"\b(?:ssn|social security(?: number| no\.?)?|soc\. sec\.)", re.I),
        context_score=0.85,
        needs_context=True,
        min_digits=9,
        needs=("ssn", "social security", "soc. sec"),
    ),
    Recognizer(
        "UK_NINO",
        re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),
        0.8,
        min_digits=6,
    ),
    # a number with a country code or an area code in brackets reads as a phone number by itself;
    # plain groups of digits ("2024 1234") only next to a word such as "call" or "phone"
    Recognizer(
        "PHONE_NUMBER",
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?|\(\d{1,4}\)[\s.-]?)\d{1,5}(?:[\s.-]?\d{2,6}){0,4}(?![\w-])"
        ),
        0.75,
        shrink=True,
        check=_phone_ok,
        context=_PHONE_WORDS,
        context_score=0.9,
        min_digits=8,
    ),
    Recognizer(
        "PHONE_NUMBER",
        re.compile(r"(?<![\w+])\d{2,5}(?:[\s.-]\d{2,6}){1,4}(?![\w-])"),
        0.4,
        shrink=True,
        check=_phone_ok,
        avoid=_NOT_PHONE_WORDS,
        context=_PHONE_WORDS,
        context_score=0.85,
        min_digits=8,
    ),
    Recognizer(
        "PHONE_NUMBER",
        re.compile(r"(?<![\w+])\d{8,15}(?![\w-])"),
        0.3,
        check=_phone_ok,
        avoid=_NOT_PHONE_WORDS,
        context=_PHONE_STRONG,
        context_score=0.85,
        needs_context=True,
        min_digits=8,
        needs=_STRONG_WORDS,
    ),
    Recognizer(
        "PHONE_NUMBER",
        re.compile(r"(?<![\w+])0\d{2,4}[\s/-]\d{5,8}(?![\w-])"),
        0.6,
        check=_phone_ok,
        avoid=_NOT_PHONE_WORDS,
        needs=(" 0", "(0", ":0", "\n0", "\t0", "/0", "-0"),
        context=_PHONE_WORDS,
        context_score=0.9,
        min_digits=8,
    ),
    # mainland China: CJK characters are word characters, so these look around for ASCII letters
    # and digits only ("手机13800138000" has no word boundary before the number)
    Recognizer(
        "CN_RESIDENT_ID",
        re.compile(
            r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![0-9A-Za-z])"
        ),
        0.95,  # above a card's 0.9: a birth date inside and a MOD 11-2 check are rarer by chance than Luhn
        check=cn_id_ok,
        min_digits=17,
    ),
    Recognizer(  # mobile: 1[3-9]x xxxx xxxx, alone or after +86 / 0086, with spaces or hyphens between groups
        "PHONE_NUMBER",
        re.compile(r"(?<![0-9A-Za-z+])(?:(?:\+|00)86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}(?![0-9A-Za-z])"),
        0.85,
        min_digits=11,
    ),
    Recognizer(  # landline: area code 010, 02x or 0xxx (in brackets, or after +86 without its 0), 7-8 digits
        "PHONE_NUMBER",
        re.compile(
            r"(?<![0-9A-Za-z+])(?:(?:\+|00)86[\s-]?\(?(?:10|2\d|[3-9]\d{2})\)?|\(0(?:10|2\d|[3-9]\d{2})\)"
            r"|0(?:10|2\d|[3-9]\d{2}))[\s-]?\d{3,4}[\s-]?\d{4}(?![0-9A-Za-z])"
        ),
        0.75,
        avoid=_NOT_PHONE_WORDS,
        min_digits=10,
    ),
    Recognizer(  # 我叫张伟 / 联系人：李娜 / 收件人 欧阳小明
        "PERSON",
        re.compile(_CN_NAME_CONTEXT + "(" + _CN_SURNAME + _CN_GIVEN + ")"),
        0.85,
        group=1,
        needs=("我叫", "名字", "姓名", "联系人", "收件人", "收货人", "持卡人", "户名"),
    ),
    Recognizer(  # 张先生 / 王女士 / 李小姐
        "PERSON",
        re.compile(_CN_SURNAME + "(?:先生|女士|小姐)"),
        0.7,
        needs=("先生", "女士", "小姐"),
    ),
    Recognizer(  # 北京市朝阳区建国路88号3号楼1201室: a road and a house number, from a clause's start
        "LOCATION",
        re.compile(
            "(?:(?<=[在址到于：:，,。！？\\s(（])|^)(?![我你他她它这那住在到于寄送])((?:[\u4e00-\u9fff]{1,8}?(?:省|自治区|市|区|县|镇|乡|村))*"
            + _CN_PLACE
            + _CN_UNIT
            + ")"
        ),
        0.8,
        group=1,
        min_digits=1,
        needs=("路", "街", "道", "巷", "弄", "胡同"),
    ),
    Recognizer(
        "DATE_OF_BIRTH",
        re.compile(
            r"\b(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})|\d{4}-\d{2}-\d{2}|\d{1,2}(?:st|nd|rd|th)? "
            + _MONTH_NAMES
            + r",? \d{4}|"
            + _MONTH_NAMES
            + r" \d{1,2}(?:st|nd|rd|th)?,? \d{4})\b",
            re.I,
        ),
        0.3,
        check=birth_date_ok,
        context=_BIRTH_WORDS,
        context_score=0.85,
        needs_context=True,
        min_digits=4,
        needs=("born", "birth", "dob", "d.o.b", "geboren", "né"),
    ),
]

SUPPORTED = sorted({r.entity for r in RECOGNIZERS})
# every recognizer needs a digit, an '@', a ':' or 'www.', except the Chinese names (their context words)
_QUICK = re.compile(r"[\d@:]|www\.|我叫|名字|姓名|联系人|收件人|收货人|持卡人|户名|先生|女士|小姐", re.I)
CONTEXT_WINDOW = 40


def _shrunk(raw: str, start: int, check: Callable[[str], bool]) -> int | None:
    """The end of the longest prefix of ``raw``, cut at a separator, that passes ``check``."""
    cuts = [m.start() for m in re.finditer(r"[\s.-]", raw)]
    for cut in reversed(cuts):
        if check(raw[:cut]):
            return start + cut
    return None


_DIGIT = re.compile(r"\d")


def _digits(text: str) -> int:
    """How many digits (as the recognizers' \\d sees them) ``text`` holds."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw) - len(raw.translate(None, b"0123456789"))
    return len(_DIGIT.findall(text))  # \d matches other scripts' digits too


# characters that hide inside a value without showing: zero-width spaces and joiners, the word
# joiner, the byte-order mark, the soft hyphen
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_INVISIBLE_RE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e]")


def normalized(text: str) -> tuple[str, list[int] | None]:
    """``text`` as the recognizers read it — Unicode NFKC (full-width ＠ and digits become @ and
    0-9) without invisible characters — and, where that changed anything, the position in ``text``
    of each character of the result (None: the same text)."""
    if text.isascii():
        return text, None
    if unicodedata.is_normalized("NFKC", text) and not _INVISIBLE_RE.search(text):
        return text, None  # the usual case, checked at C speed
    out: list[str] = []
    where: list[int] = []
    pos = 0
    for m in _NON_ASCII.finditer(text):  # ASCII stretches are copied whole; other characters one by one
        out.append(text[pos : m.start()])
        where.extend(range(pos, m.start()))
        for i in range(m.start(), m.end()):
            ch = text[i]
            if ord(ch) in _INVISIBLE:
                continue
            n = unicodedata.normalize("NFKC", ch)
            out.append(n)
            where.extend([i] * len(n))
        pos = m.end()
    out.append(text[pos:])
    where.extend(range(pos, len(text)))
    result = "".join(out)
    if result == text:
        return text, None
    return result, where


def find(text: str, entities: set[str] | None = None, threshold: float = 0.5) -> list[Span]:
    """Every pattern finding at or above ``threshold`` (overlaps not yet resolved), read on the
    normalised text (see :func:`normalized`) and given as spans of ``text`` itself."""
    norm, where = normalized(text)
    spans = _find(norm, entities, threshold)
    if where is None:
        return spans
    return [Span(where[s.start], where[s.end - 1] + 1, s.entity, s.score, s.source) for s in spans]


def _find(text: str, entities: set[str] | None, threshold: float) -> list[Span]:
    if not _QUICK.search(text):
        return []
    digits = _digits(text)
    low = None
    out: list[Span] = []
    for r in RECOGNIZERS:
        if entities is not None and r.entity not in entities:
            continue
        if digits < r.min_digits:
            continue
        if r.needs:
            low = " " + text.lower() if low is None else low  # the space: a needed " 0" also at the start
            if not any(n in low for n in r.needs):
                continue
        for m in r.pattern.finditer(text):
            start, end = m.span(r.group)
            raw = m.group(r.group)
            if r.trim:
                stripped = raw.rstrip(r.trim)
                end -= len(raw) - len(stripped)
                raw = stripped
            if r.check is not None and not r.check(raw):
                shrunk = _shrunk(raw, start, r.check) if r.shrink else None
                if shrunk is None:
                    continue
                end, raw = shrunk, text[start:shrunk]
            if r.entity == "PHONE_NUMBER" and _card_shaped(text, start, end):
                continue
            score = r.score
            ctx = r.context.search(text, max(0, start - CONTEXT_WINDOW), start) if r.context is not None else None
            if r.avoid is not None:
                # the last identifier word before the match, if nearer than the last phone word
                last_avoid = None
                for a in r.avoid.finditer(text, max(0, start - 25), start):
                    last_avoid = a
                if last_avoid is not None:
                    last_ctx = None
                    for c in _PHONE_STRONG.finditer(text, max(0, start - CONTEXT_WINDOW), start):
                        last_ctx = c
                    if last_ctx is None or last_ctx.start() < last_avoid.start():
                        continue
            if r.context is not None:
                if ctx is not None:
                    score = max(score, r.context_score)
                elif r.needs_context:
                    continue
            if score >= threshold:
                out.append(Span(start, end, r.entity, score))
    return out


_CARD_SHAPE = re.compile(r"\d{4}([ ./_-]?)\d{4,6}(?:\1\d{1,7}){0,3}")
_RUN_CHARS = frozenset("0123456789 ./_-")


def _card_shaped(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` lies in a run of digit groups written like a card number (13 to
    19 digits, grouped by one separator): such a run that fails the card check is a card number
    mistyped or a long reference, not a phone number hiding in its tail."""
    lo, hi = start, end
    while lo > 0 and text[lo - 1] in _RUN_CHARS:
        lo -= 1
    while hi < len(text) and text[hi] in _RUN_CHARS:
        hi += 1
    while lo < hi and text[lo] in " ./_-":
        lo += 1
    run = text[lo:hi].rstrip(" ./_-")
    if not run or run[0] == "0" or (lo > 0 and text[lo - 1] == "+"):  # 00…, +…: an international phone number
        return False
    n = sum(c.isdigit() for c in run)
    return 13 <= n <= 19 and _CARD_SHAPE.fullmatch(run) is not None


def resolve(spans: list[Span]) -> list[Span]:
    """Non-overlapping spans, preferring the higher score, then the longer span."""
    chosen: list[Span] = []
    for s in sorted(spans, key=lambda s: (-s.score, -(s.end - s.start), s.start)):
        if all(s.end <= c.start or s.start >= c.end for c in chosen):
            chosen.append(s)
    return sorted(chosen, key=lambda s: s.start)
