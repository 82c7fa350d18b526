"""The formats the default guard once missed, and look-alikes it must leave alone; with
property-based tests (hypothesis) that insert them into real inbox messages."""

import random
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from offramp.data.io import read_dataset
from offramp.demo.data import demo_paths
from offramp.privacy.guard import PrivacyGuard
from offramp.privacy.patterns import luhn_ok

GUARD = PrivacyGuard()

# (text, the value that must not survive, the type it must be masked as)
MISSED = [
    ("my phone number is 4155550132", "4155550132", "PHONE_NUMBER"),
    ("iban de89370400440532013000 thanks", "de89370400440532013000", "IBAN_CODE"),
    ("my iban is GB29nwbk60161331926819", "GB29nwbk60161331926819", "IBAN_CODE"),
    ("card 4111.1111.1111.1111 was declined", "4111.1111.1111.1111", "CREDIT_CARD"),
    ("card 4111_1111_1111_1111 was declined", "4111_1111_1111_1111", "CREDIT_CARD"),
    ("card 4111/1111/1111/1111 was declined", "4111/1111/1111/1111", "CREDIT_CARD"),
    ("write to jörg@bücher.de please", "jörg@bücher.de", "EMAIL_ADDRESS"),
    ("my ssn 078051120", "078051120", "US_SSN"),
    ("mail anna\u200b.lee@example.com", "anna\u200b.lee@example.com", "EMAIL_ADDRESS"),
    ("mail anna.lee\uff20example.com", "anna.lee\uff20example.com", "EMAIL_ADDRESS"),
    ("call 030 1234567 after five", "030 1234567", "PHONE_NUMBER"),
    ("mobile: 07700900123", "07700900123", "PHONE_NUMBER"),
    ("whatsapp 13800138000", "13800138000", "PHONE_NUMBER"),
    ("Tel 4155550132", "4155550132", "PHONE_NUMBER"),
    ("ring me on \uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff13\uff12", "\uff14\uff11\uff15", "PHONE_NUMBER"),
]

# identifiers, amounts and dates that look like personal data but are not
NEAR_MISSES = [
    "order 12345678 shipped",
    "order number 12345678",
    "my order number is 1234 5678",
    "tracking 0123 456789",
    "invoice no. 2024 1234",
    "invoice INV-2024-000123",
    "amount 1234.56 EUR",
    "price 1.299,00 €",
    "the fee was $1,250.00",
    "date 2024-01-15",
    "reference 2024/11/29",
    "ticket #88231 about my login",
    "transaction id 987654321",
    "room 0123 45678",
]


@pytest.mark.parametrize("text, value, entity", MISSED)
def test_formats_once_missed_are_masked(text, value, entity):
    masked = GUARD.mask(text)
    assert value not in masked.text, masked.text
    assert entity in masked.counts, (text, masked.counts)


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_look_alikes_are_left_alone(text):
    assert GUARD(text) == text


def test_spans_map_back_to_the_original_text():
    text = "x \uff4a\uff4f\uff45\uff20\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com y"  # full-width letters too
    spans = GUARD.find(text)
    assert [(text[s.start : s.end], s.entity) for s in spans] == [(text[2:-2], "EMAIL_ADDRESS")]
    assert GUARD(text) == "x <EMAIL_ADDRESS> y"


# ---------------------------------------------------------------- properties on real messages
_TEXTS = read_dataset(demo_paths()[1]).texts[:400]


def _card(rng: random.Random, sep: str) -> str:
    # a card number's first digit (the major industry identifier) is never 0: numbers starting with
    # 00 are international phone prefixes, which the guard leaves to the phone recognizer
    digits = [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(14)]
    for check in range(10):
        if luhn_ok("".join(map(str, digits + [check]))):
            break
    s = "".join(map(str, digits + [check]))
    return sep.join(s[i : i + 4] for i in range(0, 16, 4))


def _phone(rng: random.Random) -> str:
    return rng.choice(["+1 415 555 {:04d}", "0171 {:07d}", "07700 {:06d}", "+44 20 7946 {:04d}"]).format(
        rng.randint(0, 999999)
    )


VALUES = {
    "EMAIL_ADDRESS": lambda r: (
        f"{r.choice(['anna', 'jörg', 'wei.li', 'o.berg'])}{r.randint(1, 99)}@{r.choice(['example.com', 'bücher.de', 'mail.example.org'])}"
    ),
    "CREDIT_CARD": lambda r: _card(r, r.choice([" ", "-", ".", "/", "_", ""])),
    "PHONE_NUMBER": _phone,
    "IBAN_CODE": lambda r: r.choice(
        ["DE89 3704 0044 0532 0130 00", "gb29nwbk60161331926819", "FR1420041010050500013M02606"]
    ),
}
CONTEXT = {
    "EMAIL_ADDRESS": "write to",
    "CREDIT_CARD": "my card",
    "PHONE_NUMBER": "call me on",
    "IBAN_CODE": "iban",
}


def _disguise(value: str, how: int) -> str:
    if how == 1 and "@" in value:
        return value.replace("@", "\uff20")
    if how == 2 and len(value) > 4:
        return value[:3] + "\u200b" + value[3:]
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(_TEXTS) - 1),
    st.sampled_from(sorted(VALUES)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2),
    st.booleans(),
)
def test_inserted_personal_data_never_leaks(i, entity, seed, how, at_end):
    value = _disguise(VALUES[entity](random.Random(seed)), how)
    base = _TEXTS[i]
    text = f"{base} {CONTEXT[entity]} {value}" if at_end else f"{CONTEXT[entity]} {value}, {base}"
    masked = GUARD(text)
    digits_or_local = value.split("@")[0] if "@" in value or "\uff20" in value else value
    assert value not in masked and digits_or_local not in masked, (text, masked)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_TEXTS) - 1), st.sampled_from(NEAR_MISSES))
def test_near_misses_in_real_messages_are_never_masked(i, near):
    base = _TEXTS[i]
    # a date right after "born" or "birthday" is a date of birth, not a look-alike
    assume(not re.search(r"born|birth|dob", base, re.I) or not re.search(r"\d{4}[-/]\d{2}[-/]\d{2}", near))
    text = f"{base} {near}"
    masked = GUARD(text)
    assert masked.endswith(near), (text, masked)


# ---------------------------------------------------------------- mainland China
CN_MISSED = [
    ("我的手机13800138000，谢谢", "13800138000", "PHONE_NUMBER"),
    ("请打 138 0013 8000 找我", "138 0013 8000", "PHONE_NUMBER"),
    ("电话：+86 138-0013-8000", "+86 138-0013-8000", "PHONE_NUMBER"),
    ("联系0086 13912345678", "13912345678", "PHONE_NUMBER"),
    ("座机010-62345678转分机", "010-62345678", "PHONE_NUMBER"),
    ("深圳办公室(0755) 8888 8888", "(0755) 8888 8888", "PHONE_NUMBER"),
    ("总部+86 10 6234 5678", "+86 10 6234 5678", "PHONE_NUMBER"),
    ("身份证号11010519491231002X", "11010519491231002X", "CN_RESIDENT_ID"),
    ("身份证号码是11010519491231002x。", "11010519491231002x", "CN_RESIDENT_ID"),
    ("银联卡号6222021234567890128被扣款", "6222021234567890128", "CREDIT_CARD"),
    ("卡号：6222 0212 3456 7890 128", "6222 0212 3456 7890 128", "CREDIT_CARD"),
    ("全角手机１３８００１３８０００", "１３８００１３８０００", "PHONE_NUMBER"),
    ("邮箱zhang.wei@qq.com有问题", "zhang.wei@qq.com", "EMAIL_ADDRESS"),
    ("网址 https://例子.中国/订单 打不开", "https://例子.中国/订单", "URL"),
    # written against CJK text, with no space or word boundary around the value
    ("链接http://例子.中国/订单/40750打不开", "http://例子.中国/订单/40750", "URL"),
    ("看这个页面：www.jd.com/12345678.html，谢谢", "www.jd.com/12345678.html", "URL"),
    ("请分清是谁在对账.我的邮箱是liuyang442@qq.com。", "liuyang442@qq.com", "EMAIL_ADDRESS"),
    ("发邮件到zhangwei1@163.com吧", "zhangwei1@163.com", "EMAIL_ADDRESS"),
    ("这套书不适合小小孩看!.我的邮箱是客服39@例子.中国。", "客服39@例子.中国", "EMAIL_ADDRESS"),
    # Luhn-valid by chance, yet a phone or an identity number, not a card
    ("手机+86 187-5343-5370", "187-5343-5370", "PHONE_NUMBER"),
    ("电话：008613901610339", "13901610339", "PHONE_NUMBER"),
    ("身份证号320102200501036896", "320102200501036896", "CN_RESIDENT_ID"),
    # names and addresses, by their cues (the fast path; no Chinese NER model loads offline)
    ("我叫张伟想问一下我的卡", "张伟", "PERSON"),
    ("联系人：欧阳小明", "欧阳小明", "PERSON"),
    ("请转告王女士明天来", "王女士", "PERSON"),
    ("收货地址：北京市朝阳区建国路88号3号楼1201室，谢谢", "北京市朝阳区建国路88号3号楼1201室", "LOCATION"),
    ("我住在上海市浦东新区世纪大道100号", "上海市浦东新区世纪大道100号", "LOCATION"),
    ("寄到成都市武侯区人民南路四段9号", "成都市武侯区人民南路四段9号", "LOCATION"),
]
CN_NEAR_MISSES = [
    "订单号12345678901234567已发货",  # 17 digits: not an identity card
    "身份证 110105194912310021 校验位不对",  # the check character is wrong
    "编号110105199913450021",  # month 13: no birth date
    "金额1380.00元",
    "快递单号SF1234567890123",
    "日期2024-01-15",
    "我叫了快递，这位先生很客气",
    "路上堵了20分钟，第3号窗口",
    "订单号：046563414839",  # a trunk 0 and 11 digits after "order number": not a landline
    "订单0241856227于2013-08-08付款200.66元，共5件，第1次催单",
]


@pytest.mark.parametrize("text, value, entity", CN_MISSED)
def test_chinese_personal_data_is_masked(text, value, entity):
    masked = GUARD.mask(text)
    assert value not in masked.text, masked.text
    assert set(masked.counts) == {entity}, (text, masked.counts)


@pytest.mark.parametrize("text", CN_NEAR_MISSES)
def test_chinese_look_alikes_are_left_alone(text):
    assert GUARD(text) == text


def _cn_id(rng: random.Random) -> str:
    from offramp.privacy.patterns import _CN_ID_WEIGHTS

    body = f"{rng.randint(110000, 659999)}{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body += f"{rng.randint(0, 999):03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _CN_ID_WEIGHTS)) % 11]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10**9))
def test_any_valid_identity_number_is_found_and_a_changed_digit_is_not(seed):
    rng = random.Random(seed)
    number = _cn_id(rng)
    text = rng.choice(["身份证号{}", "我的身份证是{}，请核对", "ID {} thanks", "证件号码:{}"]).format(number)
    assert number not in GUARD(text)
    wrong = number[:-1] + ("0" if number[-1] != "0" else "1")
    # not an identity number any more (one in ten such digit strings passes the card check instead)
    assert "CN_RESIDENT_ID" not in {s.entity for s in GUARD.find(f"证件号码:{wrong}")}


def test_offramp_mask_catches_chinese_personal_data(tmp_path):
    from helpers import run_cli, write_csv

    src = write_csv(
        tmp_path / "zh.csv",
        [
            ("我叫张伟，手机13800138000，身份证号11010519491231002X，请回电",),
            ("订单号：046563414839，金额1380.00元，谢谢",),
            ("收货地址：北京市朝阳区建国路88号3号楼1201室",),
        ],
        header=("text",),
    )
    r = run_cli("mask", str(src), "--out", str(tmp_path / "out.csv"))
    assert r.returncode == 0, r.stderr
    out = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert out[1] == "我叫<PERSON>，手机<PHONE_NUMBER>，身份证号<CN_RESIDENT_ID>，请回电"
    assert out[2] == "订单号：046563414839，金额1380.00元，谢谢"  # ordinary numbers stay
    assert out[3] == "收货地址：<LOCATION>"


# ---------------------------------------------------------------- cards in every layout
# (brand, prefixes, lengths, how the digits are grouped when written) — the issuers' published ranges
BRANDS = [
    ("visa", ["4"], [13, 16, 19]),
    ("mastercard", [str(p) for p in range(51, 56)] + ["2221", "2500", "2720"], [16]),
    ("amex", ["34", "37"], [15]),
    ("discover", ["6011", "644", "649", "65"], [16, 19]),
    ("unionpay", ["62"], [16, 17, 18, 19]),
    ("jcb", ["3528", "3589"], [16, 19]),
    ("diners", ["36", "300", "305", "38"], [14]),
]
SEPARATORS = [" ", "-", ".", "_", "/", ""]
CUES = [
    "my card {} was declined",  # before
    "please block {}, it is my card",  # after
    "{} was charged twice.",  # sentence start
    "Thanks. Card {} expired.",  # capitalised, at a sentence start
    "Hi there. {} is the Card number",
]


def _groups(n: int) -> list[int]:
    return {13: [4, 4, 5], 14: [4, 6, 4], 15: [4, 6, 5], 16: [4, 4, 4, 4], 17: [4, 4, 4, 5]}.get(
        n, [4, 4, 4, 4, n - 16]
    )


def _card_number(rng: random.Random, prefix: str, length: int, valid: bool) -> str:
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    good = next(str(c) for c in range(10) if luhn_ok(body + str(c)))
    return body + (good if valid else str((int(good) + rng.randint(1, 9)) % 10))


def _written(number: str, sep: str) -> str:
    out, i = [], 0
    for g in _groups(len(number)):
        out.append(number[i : i + g])
        i += g
    return sep.join(out)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(BRANDS), st.integers(0, 10**9), st.sampled_from(SEPARATORS), st.sampled_from(CUES), st.booleans()
)
def test_every_brand_layout_and_cue_is_masked_and_a_bad_check_digit_is_not(brand, seed, sep, cue, valid):
    rng = random.Random(seed)
    _, prefixes, lengths = brand
    number = _card_number(rng, rng.choice(prefixes), rng.choice(lengths), valid)
    assume(len(set(number)) > 1)
    value = _written(number, sep)
    text = cue.format(value)
    masked = GUARD.mask(text)
    if valid:
        assert value not in masked.text and masked.counts.get("CREDIT_CARD") == 1, (text, masked.text)
    else:  # left alone: not a card, and not a phone number hiding in its tail either
        assert masked.text == text, (text, masked.text)


@pytest.mark.parametrize("brand", BRANDS, ids=[b[0] for b in BRANDS])
def test_every_brand_and_layout_with_names_and_places_on(brand):
    guard = PrivacyGuard(ner=True)
    rng = random.Random(7)
    _, prefixes, lengths = brand
    for sep in SEPARATORS:
        for cue in CUES:
            value = _written(_card_number(rng, rng.choice(prefixes), rng.choice(lengths), True), sep)
            masked = guard.mask(cue.format(value))
            assert value not in masked.text and "CREDIT_CARD" in masked.counts, (cue.format(value), masked.text)
