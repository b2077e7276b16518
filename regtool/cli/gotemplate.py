"""A small, safe interpreter for the Go ``text/template`` subset that ``--format`` takes.

``skopeo inspect --format`` runs Go's text/template with the function set of
containers/common (``json``, ``join``, ``upper``...); this module gives the
same output for the same template on regtool's plain-data view of the image
(dicts, lists, str, int, float, bool, None, datetime).  Nothing is ever
``eval``-ed: the template is tokenized, parsed to a node tree and walked.

Decisions where Go's typed world meets untyped dicts:

* ``.Key`` on a dict that lacks the key gives ``<no value>``, as Go does for a
  map; ``.Key`` on None (a nil map) gives ``<no value>`` too.  Go would reject
  an unknown field of a *struct*, but a dict cannot say which it models, so the
  lenient rule is used everywhere; ``strict=True`` (Go's ``missingkey=error``)
  makes a missing key an error instead.  ``.Key`` on a str, number or list is an
  error, as in Go.
* ``index`` of a missing key returns the "zero value" of the map: ``""`` for a
  dict whose values are all strings (empty or None included, i.e. Go's
  ``map[string]string`` such as skopeo's Labels), otherwise ``<no value>``.
* Printing follows fmt's ``%v``: None is ``<nil>``, lists ``[a b]``, dicts
  ``map[k:v]`` sorted by key, floats shortest (``1e+06``), datetimes as Go's
  ``time.Time.String()``.
* ``json`` is containers/common's: compact, map keys sorted, *not* HTML-escaped
  (it calls ``SetEscapeHTML(false)``), no trailing newline.
* ``join`` takes the list first (``join .RepoTags ","``) but also accepts the
  separator first so ``{{.RepoTags | join ","}}`` works.
* ``eq`` and friends compare ints with floats numerically (Go refuses).

* ``$`` is the data itself (skopeo executes on a one-element list).

Left out: ``define``/``template``/``block``, ``call``, ``html``, ``js``,
``urlquery``, ``slice``, range over integers, ``range $i, $e = ...``
(assignment form), methods, complex and hex-float literals, custom delimiters.
Every syntax or execution error is a one-line
:class:`~regtool.errors.UsageError` quoting the action and its column.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple, NoReturn

from regtool.errors import UsageError

__all__ = ["NO_VALUE", "Template", "compile_template", "is_json_format", "normalize_format", "render"]



class _NoValue:
    """What Go prints as ``<no value>``: the result of a missing map key."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _NoValue()
_NOARG: Any = object()  # "no value piped in" for a command
_SPACE = " \t\r\n"
_TERMINATORS = _SPACE + ",|:)(=}"
_KEYWORDS = frozenset(
    {"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"}
)
_IDENT = re.compile(r"[^\W\d]\w*")
_NAME = re.compile(r"\w*")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?)"
)
_ESCAPE = re.compile(
    r"\\(?:([abfnrtv\\'\"])|x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))"
)
_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


class _Fail(Exception):
    """An execution error; the evaluator adds the action's location."""


class _SyntaxErr(Exception):
    def __init__(self, msg: str, pos: int, start: int, end: int | None = None) -> None:
        super().__init__(msg)
        self.pos, self.start, self.end = pos, start, end


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


# ---------------------------------------------------------------- tokenizer


class _Tok(NamedTuple):
    kind: str  # lit field var ident | ( ) , := =
    value: Any
    pos: int
    spaced: bool  # white space before it
    text: str


class _Text(NamedTuple):
    text: str


class _ActionItem(NamedTuple):
    toks: list[_Tok]
    start: int
    end: int


def _unescape(body: str, quote: str, pos: int, start: int) -> str:
    if "\\" not in body:
        return body
    out, i = bytearray(), 0
    while (j := body.find("\\", i)) >= 0:
        out += body[i:j].encode("utf-8", "surrogatepass")
        m = _ESCAPE.match(body, j)
        if m is None or (m.group(1) in ("'", '"') and m.group(1) != quote):
            raise _SyntaxErr(f"invalid escape in {quote}{body}{quote}", pos, start)
        simple, hexa, octal, uni = m.group(1), m.group(2), m.group(3), m.group(4) or m.group(5)
        if simple:
            out += _SIMPLE_ESC.get(simple, simple).encode()
        elif hexa or octal:
            value = int(hexa, 16) if hexa else int(octal, 8)
            if value > 255:
                raise _SyntaxErr(f"octal escape out of range in {quote}{body}{quote}", pos, start)
            out.append(value)
        else:
            code = int(uni, 16)
            if code > 0x10FFFF or 0xD800 <= code < 0xE000:
                raise _SyntaxErr(f"invalid Unicode escape in {quote}{body}{quote}", pos, start)
            out += chr(code).encode()
        i = m.end()
    out += body[i:].encode("utf-8", "surrogatepass")
    return out.decode("utf-8", "replace")


def _number(text: str, pos: int, start: int) -> int | float:
    try:
        if text.lstrip("+-")[:2].lower() not in ("0x", "0b", "0o") and any(c in text for c in ".eE"):
            return float(text)
        if re.fullmatch(r"[+-]?0[0-7_]+", text):
            return int(text, 8)
        return int(text, 0)
    except ValueError:
        raise _SyntaxErr(f"bad number syntax: {text!r}", pos, start) from None


def _lex_action(src: str, pos: int, start: int) -> tuple[list[_Tok], int, bool]:
    """Tokens of the action whose body starts at pos; also where it ends and its right trim."""
    toks: list[_Tok] = []
    n = len(src)
    while True:
        begin = pos
        while pos < n and src[pos] in _SPACE:
            pos += 1
        spaced = pos > begin
        if src.startswith("-}}", pos) and pos > 0 and src[pos - 1] in _SPACE:
            return toks, pos + 3, True
        if src.startswith("}}", pos):
            return toks, pos + 2, False
        if pos >= n:
            raise _SyntaxErr("unclosed action", start, start)
        c, at = src[pos], pos
        if c in "\"'":
            pos += 1
            while pos < n and src[pos] != c and src[pos] != "\n":
                pos += 2 if src[pos] == "\\" else 1
            if pos >= n or src[pos] != c:
                raise _SyntaxErr("unterminated quoted string", at, start)
            pos += 1
            body = _unescape(src[at + 1 : pos - 1], c, at, start)
            if c == "'" and len(body) != 1:
                raise _SyntaxErr(f"malformed character constant: {src[at:pos]}", at, start)
            toks.append(_Tok("lit", body if c == '"' else ord(body), at, spaced, src[at:pos]))
            continue
        if c == "`":
            end = src.find("`", pos + 1)
            if end < 0:
                raise _SyntaxErr("unterminated raw quoted string", at, start)
            pos = end + 1
            toks.append(_Tok("lit", src[at + 1 : end].replace("\r", ""), at, spaced, src[at:pos]))
            continue
        if c in "|(),=" or src.startswith(":=", pos):
            pos += 2 if c == ":" else 1
            toks.append(_Tok(src[at:pos], None, at, spaced, src[at:pos]))
            continue
        if c == "$" or (c == "." and not src[pos + 1 : pos + 2].isdigit()):
            name = ""
            if c == "$":
                pos = _NAME.match(src, pos + 1).end()  # type: ignore[union-attr]
                name = src[at:pos]
            names: list[str] = []
            while src.startswith(".", pos):
                end = _NAME.match(src, pos + 1).end()  # type: ignore[union-attr]
                if end == pos + 1 and (names or c == "$" or src.startswith(".", end)):
                    raise _SyntaxErr(f"bad field name in {src[at:end]}", at, start)
                names.append(src[pos + 1 : end])
                pos = end
                if not names[-1]:
                    names.pop()  # a lone "." is dot itself
                    break
            value: Any = (name, tuple(names)) if c == "$" else tuple(names)
            toks.append(_Tok("var" if c == "$" else "field", value, at, spaced, src[at:pos]))
        elif (m := _NUMBER.match(src, pos)) is not None:
            pos = m.end()
            toks.append(_Tok("lit", _number(m.group(), at, start), at, spaced, m.group()))
        elif (m := _IDENT.match(src, pos)) is not None:
            pos, word = m.end(), m.group()
            literal = {"true": True, "false": False, "nil": None}
            kind = "lit" if word in literal else "ident"
            toks.append(_Tok(kind, literal.get(word, word), at, spaced, word))
        else:
            raise _SyntaxErr(f"unexpected {c!r} in action", at, start)
        if pos < n and src[pos] not in _TERMINATORS:
            raise _SyntaxErr(f"unexpected {src[pos]!r} after {src[at:pos]}", pos, start)


def _scan(src: str) -> list[_Text | _ActionItem]:
    """Split the template into text and tokenized actions, applying trim markers and dropping comments."""
    items: list[_Text | _ActionItem] = []
    pos, trim_next = 0, False
    while True:
        i = src.find("{{", pos)
        text = src[pos:] if i < 0 else src[pos:i]
        if trim_next:
            text = text.lstrip(_SPACE)
        body = i + 2
        if i >= 0 and src.startswith("-", body) and src[body + 1 : body + 2] in tuple(_SPACE):
            text, body = text.rstrip(_SPACE), body + 2
        if text:
            items.append(_Text(text))
        if i < 0:
            return items
        if src.startswith("/*", body):
            end = src.find("*/", body + 2)
            if end < 0:
                raise _SyntaxErr("unclosed comment", i, i)
            end += 2
            if src.startswith("}}", end):
                pos, trim_next = end + 2, False
            elif src[end : end + 1] in tuple(_SPACE) and src.startswith("-}}", end + 1):
                pos, trim_next = end + 4, True
            else:
                raise _SyntaxErr("comment ends before closing delimiter", end, i)
            continue
        toks, pos, trim_next = _lex_action(src, body, i)
        items.append(_ActionItem(toks, i, pos))


# ---------------------------------------------------------------- parser


class _Field(NamedTuple):  # .A.B; no names is dot itself
    text: str
    names: tuple[str, ...]


class _Var(NamedTuple):  # $x.A.B
    text: str
    name: str
    names: tuple[str, ...]


class _Lit(NamedTuple):
    text: str
    value: Any


class _Func(NamedTuple):
    text: str


class _Sub(NamedTuple):  # (pipeline).A.B
    text: str
    cmds: list[list[_Arg]]
    names: tuple[str, ...]


class _Pipe(NamedTuple):
    cmds: list[list[_Arg]]
    decl: list[str]
    assign: bool
    start: int
    end: int


class _Action(NamedTuple):
    pipe: _Pipe


class _Block(NamedTuple):  # if / with / range
    kind: str
    pipe: _Pipe
    body: list[_Node]
    alt: list[_Node]


class _Jump(NamedTuple):  # break / continue
    kind: str


_Arg = _Field | _Var | _Lit | _Func | _Sub
_Node = _Text | _Action | _Block | _Jump


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.items = _scan(src)
        self.i = 0
        self.vars = ["$"]
        self.loops = 0
        self.item = _ActionItem([], 0, 0)
        self.toks: list[_Tok] = []
        self.k = 0

    def fail(self, msg: str, tok: _Tok | None = None, item: _ActionItem | None = None) -> NoReturn:
        item = item or self.item
        raise _SyntaxErr(msg, tok.pos if tok else item.start, item.start, item.end)

    def parse(self) -> list[_Node]:
        nodes, stop = self.block_list()
        if stop is not None:
            self.fail(f"unexpected {{{{{stop.toks[0].value}}}}}", item=stop)
        return nodes

    def block_list(self) -> tuple[list[_Node], _ActionItem | None]:
        """Nodes up to an {{end}} or {{else}} (returned) or the end of the template (None)."""
        nodes: list[_Node] = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if isinstance(item, _Text):
                nodes.append(item)
                continue
            self.item = item
            word = item.toks[0].value if item.toks and item.toks[0].kind == "ident" else None
            if word in ("end", "else"):
                return nodes, item
            if word in ("if", "with", "range"):
                nodes.append(self.control(word, item, 1))
            elif word in ("break", "continue"):
                if len(item.toks) > 1:
                    self.fail(f"unexpected {item.toks[1].text} in {{{{{word}}}}}", item.toks[1])
                if not self.loops:
                    self.fail(f"{{{{{word}}}}} outside {{{{range}}}}")
                nodes.append(_Jump(word))
            elif word in ("define", "template", "block"):
                self.fail(f"{{{{{word}}}}} is not supported")
            else:
                nodes.append(_Action(self.pipeline("command", item, 0)))
        return nodes, None

    def control(self, kind: str, item: _ActionItem, first: int) -> _Block:
        mark = len(self.vars)
        pipe = self.pipeline(kind, item, first)
        loop = 1 if kind == "range" else 0
        self.loops += loop
        body, stop = self.block_list()
        self.loops -= loop
        alt: list[_Node] = []
        if stop is not None and stop.toks[0].value == "else":
            rest = stop.toks[1:]
            if rest and rest[0].kind == "ident" and rest[0].value == kind and kind != "range":
                self.item = stop
                alt = [self.control(kind, stop, 2)]  # {{else if}} shares the {{end}}
                del self.vars[mark:]
                return _Block(kind, pipe, body, alt)
            if rest:
                self.fail(f"unexpected {rest[0].text} in {{{{else}}}}", rest[0], stop)
            alt, stop = self.block_list()
            if stop is not None and stop.toks[0].value == "else":
                self.fail("expected {{end}}; found {{else}}", item=stop)
        if stop is None:
            self.fail(f"unclosed {{{{{kind}}}}}: missing {{{{end}}}}", item=item)
        if len(stop.toks) > 1:
            self.fail(f"unexpected {stop.toks[1].text} in {{{{end}}}}", stop.toks[1], stop)
        del self.vars[mark:]
        return _Block(kind, pipe, body, alt)

    def pipeline(self, ctx: str, item: _ActionItem, first: int) -> _Pipe:
        self.item, self.toks, self.k = item, item.toks, first
        toks, decl, assign = item.toks[first:], [], False
        plain = [t.kind == "var" and not t.value[1] for t in toks[:3]] + [False] * 3
        if plain[0] and len(toks) > 1 and toks[1].kind in (":=", "="):
            decl, assign = [toks[0].value[0]], toks[1].kind == "="
            self.k += 2
        elif plain[0] and len(toks) > 3 and toks[1].kind == "," and plain[2] and toks[3].kind == ":=":
            if ctx != "range":
                self.fail(f"too many declarations in {ctx}", toks[1])
            decl = [toks[0].value[0], toks[2].value[0]]
            self.k += 4
        if assign and (ctx == "range" or decl[0] not in self.vars):
            self.fail(
                f"cannot assign to {decl[0]} here" if ctx == "range" else f"undefined variable {decl[0]}"
            )
        cmds = self.commands(ctx, closing=False)
        if decl and not assign:
            self.vars.extend(decl)
        return _Pipe(cmds, decl, assign, item.start, item.end)

    def commands(self, ctx: str, closing: bool) -> list[list[_Arg]]:
        cmds: list[list[_Arg]] = []
        while True:
            cmd: list[_Arg] = []
            while self.k < len(self.toks) and self.toks[self.k].kind not in ("|", ")"):
                if cmd and not self.toks[self.k].spaced:
                    self.fail(f"missing space before {self.toks[self.k].text}", self.toks[self.k])
                cmd.append(self.operand(ctx))
            if not cmd:
                self.fail(f"missing value for {ctx}", self.toks[self.k] if self.k < len(self.toks) else None)
            head = cmd[0]
            if isinstance(head, _Lit) and head.value is None:
                self.fail("nil is not a command")
            if cmds and (isinstance(head, _Lit) or (isinstance(head, _Field) and not head.names)):
                self.fail(f"non executable command in pipeline stage {len(cmds) + 1}")
            cmds.append(cmd)
            if self.k < len(self.toks) and self.toks[self.k].kind == "|":
                self.k += 1
                continue
            if closing and self.k >= len(self.toks):
                self.fail("unclosed left paren")
            if not closing and self.k < len(self.toks):
                self.fail(f"unexpected {self.toks[self.k].text} in {ctx}", self.toks[self.k])
            return cmds

    def operand(self, ctx: str) -> _Arg:
        tok = self.toks[self.k]
        self.k += 1
        if tok.kind == "field":
            return _Field(tok.text, tok.value)
        if tok.kind == "var":
            if tok.value[0] not in self.vars:
                self.fail(f"undefined variable {tok.value[0]}", tok)
            return _Var(tok.text, tok.value[0], tok.value[1])
        if tok.kind == "lit":
            return _Lit(tok.text, tok.value)
        if tok.kind == "ident":
            if tok.value in _KEYWORDS:
                self.fail(f"unexpected {{{{{tok.value}}}}} inside an action", tok)
            if tok.value not in _FUNCS:
                self.fail(f'function "{tok.value}" not defined', tok)
            return _Func(tok.text)
        if tok.kind == "(":
            cmds = self.commands("parenthesized pipeline", closing=True)
            end = self.toks[self.k]
            self.k += 1
            names: tuple[str, ...] = ()
            nxt = self.toks[self.k] if self.k < len(self.toks) else None
            if nxt is not None and nxt.kind == "field" and not nxt.spaced and nxt.value:
                names = nxt.value
                self.k += 1
            return _Sub(self.src[tok.pos : end.pos + 1], cmds, names)
        self.fail(f"unexpected {tok.text} in {ctx}", tok)


# ---------------------------------------------------------------- Go value formatting


def _go_type(v: Any) -> str:
    if v is None or v is NO_VALUE:
        return "<nil>"
    for cls, name in (
        (bool, "bool"),
        (int, "int"),
        (float, "float64"),
        (str, "string"),
        (datetime, "time.Time"),
    ):
        if isinstance(v, cls):
            return name
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    return "map[string]interface {}" if isinstance(v, dict) else type(v).__name__


def _sorted_keys(d: dict[Any, Any]) -> list[Any]:
    try:
        return sorted(d)
    except TypeError:
        return list(d)


def _float_text(x: float, mode: str) -> str:
    """Go's shortest float text: mode "v" is fmt's %v/%g, "json" is encoding/json."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    mant, _, exp_text = repr(abs(x)).partition("e")
    whole, _, frac = mant.partition(".")
    digits = (whole + frac).lstrip("0")
    dp = len(whole) + int(exp_text or 0) - (len(whole + frac) - len(digits))
    digits = digits.rstrip("0") or "0"
    dp = dp if digits != "0" else 1
    sign, exp = ("-" if math.copysign(1.0, x) < 0 else ""), dp - 1
    if (exp < -6 or exp >= 21) if mode == "json" else (exp < -4 or exp >= 6):
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        power = str(abs(exp)) if mode == "json" else f"{abs(exp):02d}"
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{power}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def _go_time(t: datetime, rfc3339: bool = False) -> str:
    off = t.utcoffset()
    secs = int(off.total_seconds()) if off is not None else 0
    hours, minutes = divmod(abs(secs) // 60, 60)
    sign = "-" if secs < 0 else "+"
    frac = f".{t.microsecond:06d}".rstrip("0").rstrip(".")
    day = f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    clock = f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}{frac}"
    if rfc3339:
        return f"{day}T{clock}{'Z' if secs == 0 else f'{sign}{hours:02d}:{minutes:02d}'}"
    name = t.tzname() if off is not None else "UTC"
    if not name or (name.startswith("UTC") and secs):
        name = f"{sign}{hours:02d}{minutes:02d}"
    return f"{day} {clock} {sign}{hours:02d}{minutes:02d} {name}"


def _fmt_v(v: Any) -> str:
    """fmt's %v."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return _float_text(v, "v")
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_v(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{_fmt_v(k)}:{_fmt_v(v[k])}" for k in _sorted_keys(v)) + "]"
    if isinstance(v, datetime):
        return _go_time(v)
    return str(v)


_QUOTE_ESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_quote(s: str, q: str) -> str:
    """strconv.Quote (q='"') or QuoteRune (q="'")."""
    out = [q]
    for ch in s:
        code = ord(ch)
        if ch in (q, "\\"):
            out.append("\\" + ch)
        elif ch in _QUOTE_ESC:
            out.append(_QUOTE_ESC[ch])
        elif 0xD800 <= code < 0xE000:
            out.append("\\ufffd")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(
                f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
    return "".join(out) + q


_JSON_ESC = re.compile('["\\\\\x00-\x1f\u2028\u2029\ud800-\udfff]')
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _json_escape(m: re.Match[str]) -> str:
    c = m.group()
    return _JSON_SHORT.get(c) or ("\\ufffd" if "\ud800" <= c <= "\udfff" else f"\\u{ord(c):04x}")


def _json(v: Any) -> str:
    """encoding/json, compact, maps sorted by key, SetEscapeHTML(false)."""
    if v is None or v is NO_VALUE:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise _Fail(f"json: unsupported value: {_float_text(v, 'v')}")
        return _float_text(v, "json")
    if isinstance(v, (str, datetime)):
        return '"' + _JSON_ESC.sub(_json_escape, v if isinstance(v, str) else _go_time(v, True)) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_json(x) for x in v) + "]"
    if isinstance(v, dict):
        if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in v):
            raise _Fail("json: unsupported map key type")
        pairs = sorted((str(k), x) for k, x in v.items())
        return "{" + ",".join(f"{_json(k)}:{_json(x)}" for k, x in pairs) + "}"
    raise _Fail(f"json: unsupported type: {_go_type(v)}")


# ---------------------------------------------------------------- printf


_VERB = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d*))?(.?)", re.S)


def _bad(v: Any) -> str:
    return "<nil>" if v is None else f"{_go_type(v)}={_fmt_v(v)}"


def _fmt_scalar(v: Any, verb: str, flags: str, prec: int | None) -> tuple[str | None, bool]:
    """The text of one printf operand (None: wrong verb) and whether it is numeric."""
    sign = "+" if "+" in flags else " " if " " in flags else ""
    if v is None or isinstance(v, bool):
        return (_fmt_v(v), False) if verb == "v" or (verb == "t" and v is not None) else (None, False)
    if isinstance(v, int):
        if verb in "cqU":
            char = chr(v) if 0 <= v <= 0x10FFFF and not 0xD800 <= v < 0xE000 else "\ufffd"
            return {"c": char, "q": _go_quote(char, "'"), "U": f"U+{v:04X}"}[verb], False
        base = {"d": "d", "v": "d", "x": "x", "X": "X", "o": "o", "b": "b"}.get(verb)
        if base is None:
            return None, False
        digits = format(abs(v), base).zfill(prec or 0)
        if "#" in flags and verb in "xX":
            digits = "0" + verb + digits
        return ("-" if v < 0 else sign) + digits, True
    if isinstance(v, float):
        if verb not in "veEfFgG":
            return None, False
        if math.isnan(v) or math.isinf(v):
            return _float_text(v, "v"), True
        if verb in "vgG" and prec is None:
            text = _float_text(v, "v")
            text = text.upper() if verb == "G" else text
            return (text if text.startswith("-") else sign + text), True
        return format(v, f"{sign}.{6 if prec is None else prec}{'g' if verb == 'v' else verb}"), True
    if isinstance(v, str):
        cut = v if prec is None else v[:prec]
        if verb in "sv":
            return cut, False
        if verb == "q":
            return _go_quote(cut, '"'), False
        hexed = cut.encode("utf-8", "replace").hex() if verb in "xX" else None
        return (hexed.upper() if hexed and verb == "X" else hexed), False
    return (_fmt_v(v), False) if verb in "vs" else (None, False)


def _fmt_arg(v: Any, verb: str, flags: str, width: int | None, prec: int | None) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_arg(x, verb, flags, width, prec) for x in v) + "]"
    if isinstance(v, dict):
        pairs = (
            f"{_fmt_arg(k, verb, flags, width, prec)}:{_fmt_arg(v[k], verb, flags, width, prec)}"
            for k in _sorted_keys(v)
        )
        return "map[" + " ".join(pairs) + "]"
    text, numeric = _fmt_scalar(v, verb, flags, prec)
    if text is None:
        return f"%!{verb}({_bad(v)})"
    fill = (width or 0) - len(text)
    if fill <= 0:
        return text
    if "-" in flags:
        return text + " " * fill
    if "0" in flags and numeric and text[-1:].isdigit():
        k = 1 if text[:1] in ("+", "-", " ") else 0
        k += 2 if text[k : k + 2] in ("0x", "0X") else 0
        return text[:k] + "0" * fill + text[k:]
    return " " * fill + text


def _printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise _Fail(f"wrong type for value; expected string; got {_go_type(fmt)}")
    out: list[str] = []
    used = pos = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        w, p = (int(width) if width else None), (None if prec is None else int(prec or 0))
        if verb == "%":
            out.append("%")
        elif not verb:
            out.append("%!(NOVERB)")
        elif (w or 0) > 1_000_000 or (p or 0) > 1_000_000:
            out.append("%!(BADWIDTH)" if (w or 0) > 1_000_000 else "%!(BADPREC)")
        elif used >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_fmt_arg(args[used], verb, flags, w, p))
            used += 1
    out.append(fmt[pos:])
    if used < len(args):
        out.append("%!(EXTRA " + ", ".join(_bad(a) for a in args[used:]) + ")")
    return "".join(out)


# ---------------------------------------------------------------- functions


def _truth(v: Any) -> bool:
    if v is None or v is NO_VALUE:
        return False
    if isinstance(v, (str, list, tuple, dict)):
        return len(v) > 0
    return bool(v) if isinstance(v, (int, float)) else True


def _need(v: Any, typ: type, name: str) -> Any:
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise _Fail(f"wrong type for value; expected {name}; got {_go_type(v)}")
    return v


def _kind(v: Any) -> str:
    if v is None or isinstance(v, (bool, str)):
        return type(v).__name__
    return "number" if isinstance(v, (int, float)) else "other"


def _eq(a: Any, *others: Any) -> bool:
    for b in others:
        ka, kb = _kind(a), _kind(b)
        if "NoneType" in (ka, kb):
            hit = a is None and b is None
        elif "other" in (ka, kb):
            raise _Fail(f"non-comparable type {_go_type(a if ka == 'other' else b)}")
        elif ka != kb:
            raise _Fail("incompatible types for comparison")
        else:
            hit = a == b
        if hit:
            return True
    return False


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        ka, kb = _kind(a), _kind(b)
        if ka not in ("number", "str") or kb not in ("number", "str"):
            raise _Fail(f"invalid type for comparison: {_go_type(a if ka not in ('number', 'str') else b)}")
        if ka != kb:
            raise _Fail("incompatible types for comparison")
        return op(a, b)

    return compare


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, dict):
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise _Fail(f"cannot index map with type {_go_type(key)}")
            if key in item:
                item = item[key]
            elif not isinstance(key, str) and any(isinstance(k, str) for k in item):
                raise _Fail(f"value has type {_go_type(key)}; should be string")
            else:
                item = "" if all(isinstance(x, str) for x in item.values()) else NO_VALUE
        elif isinstance(item, (list, tuple, str)) or item is None:
            if item is None and isinstance(key, str):
                item = ""  # a nil map[string]string
                continue
            if not isinstance(key, int) or isinstance(key, bool):
                raise _Fail(f"cannot index slice/array with type {_go_type(key)}")
            seq: Any = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else (item or ())
            if not 0 <= key < len(seq):
                raise _Fail(f"index out of range: {key}")
            item = seq[key]
        else:
            raise _Fail(f"can't index item of type {_go_type(item)}")
    return item


def _len(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode("utf-8", "surrogatepass"))  # Go counts bytes
    if isinstance(v, (list, tuple, dict)):
        return len(v)
    raise _Fail("len of nil pointer" if v is None else f"len of type {_go_type(v)}")


def _join(elems: Any, sep: Any) -> str:
    if isinstance(elems, str) and isinstance(sep, (list, tuple)):
        elems, sep = sep, elems  # {{.RepoTags | join ","}}
    _need(sep, str, "string")
    if elems is None:
        return ""
    if not isinstance(elems, (list, tuple)) or not all(isinstance(e, str) for e in elems):
        raise _Fail(f"wrong type for value; expected []string; got {_go_type(elems)}")
    return str(sep).join(elems)


def _split(s: Any, sep: Any) -> list[str]:
    text: str = _need(s, str, "string")
    separator: str = _need(sep, str, "string")
    return text.split(separator) if separator else list(text)


def _title(s: Any) -> str:
    return re.sub(r"(?<!\w)\w", lambda m: m.group().upper(), _need(s, str, "string"))


def _pad(s: Any, before: Any, after: Any) -> str:
    text, n1, n2 = _need(s, str, "string"), _need(before, int, "int"), _need(after, int, "int")
    return f"{' ' * n1}{text}{' ' * n2}" if text else ""


def _truncate(s: Any, n: Any) -> str:
    text, size = _need(s, str, "string"), _need(n, int, "int")
    if size < 0:
        raise _Fail(f"slice bounds out of range [:{size}]")
    return text[:size]  # type: ignore[no-any-return]


def _sprint(*args: Any) -> str:
    parts = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            parts.append(" ")
        parts.append(_fmt_v(a))
    return "".join(parts)


# name -> (function, min args, max args or -1); "and"/"or" are evaluated lazily by the evaluator
_FUNCS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "and": (_truth, 1, -1),
    "or": (_truth, 1, -1),
    "not": (lambda a: not _truth(a), 1, 1),
    "eq": (_eq, 2, -1),
    "ne": (lambda a, b: not _eq(a, b), 2, 2),
    "lt": (_ordered(operator.lt), 2, 2),
    "le": (_ordered(operator.le), 2, 2),
    "gt": (_ordered(operator.gt), 2, 2),
    "ge": (_ordered(operator.ge), 2, 2),
    "index": (_index, 1, -1),
    "len": (_len, 1, 1),
    "print": (_sprint, 0, -1),
    "printf": (_printf, 1, -1),
    "println": (lambda *a: " ".join(_fmt_v(x) for x in a) + "\n", 0, -1),
    "json": (_json, 1, 1),
    "join": (_join, 2, 2),
    "split": (_split, 2, 2),
    "upper": (lambda s: _need(s, str, "string").upper(), 1, 1),
    "lower": (lambda s: _need(s, str, "string").lower(), 1, 1),
    "title": (_title, 1, 1),
    "pad": (_pad, 3, 3),
    "truncate": (_truncate, 2, 2),
}


# ---------------------------------------------------------------- evaluator


_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")


def _one_line(text: str, limit: int) -> str:
    """text with control characters escaped, cut to about limit characters."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _located(kind: str, src: str, pos: int, start: int, end: int | None, msg: str) -> UsageError:
    """The one-line error: what went wrong, in which action, at which line and column."""
    line = src.count("\n", 0, pos) + 1
    col = pos - src.rfind("\n", 0, pos)
    where = f"line {line}, column {col}" if "\n" in src else f"column {col}"
    snippet = _one_line(src[start : end if end is not None else start + 50], 48)
    return UsageError(f"{kind} at {where} in {snippet}: {_one_line(msg, 200)}")


class _Exec:
    def __init__(self, tmpl: Template, data: Any) -> None:
        self.src, self.strict = tmpl.source, tmpl.strict
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.out: list[str] = []

    def error(self, pipe: _Pipe, msg: str) -> UsageError:
        return _located("template error", self.src, pipe.start, pipe.start, pipe.end, msg)

    def walk(self, nodes: list[_Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _Action):
                value = self.pipe(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append("<no value>" if value is NO_VALUE else _fmt_v(value))
            elif isinstance(node, _Block):
                mark = len(self.vars)
                if node.kind == "range":
                    self.range(node, dot)
                else:
                    value = self.pipe(node.pipe, dot)
                    if _truth(value):
                        self.walk(node.body, value if node.kind == "with" else dot)
                    else:
                        self.walk(node.alt, dot)
                del self.vars[mark:]
            else:
                raise _Break() if node.kind == "break" else _Continue()

    def range(self, node: _Block, dot: Any) -> None:
        value = self.pipe(node.pipe, dot, bind=False)
        if isinstance(value, dict):
            items = [(k, value[k]) for k in _sorted_keys(value)]
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif value is None or value is NO_VALUE:
            items = []
        else:
            raise self.error(node.pipe, f"range can't iterate over {_fmt_v(value)}")
        if not items:
            self.walk(node.alt, dot)
        names, mark = node.pipe.decl, len(self.vars)
        for key, elem in items:
            self.vars += list(zip(names, [elem] if len(names) == 1 else [key, elem], strict=False))
            try:
                self.walk(node.body, elem)
            except _Break:
                break
            except _Continue:
                pass
            finally:
                del self.vars[mark:]

    def pipe(self, pipe: _Pipe, dot: Any, bind: bool = True) -> Any:
        try:
            value = self.run(pipe.cmds, dot)
        except _Fail as exc:
            raise self.error(pipe, str(exc)) from None
        if bind and pipe.decl:
            if pipe.assign:
                at = max((i for i, (name, _) in enumerate(self.vars) if name == pipe.decl[0]), default=-1)
                if at >= 0:
                    self.vars[at] = (pipe.decl[0], value)
                    return value
            self.vars.append((pipe.decl[0], value))
        return value

    def run(self, cmds: list[list[_Arg]], dot: Any) -> Any:
        value = _NOARG
        for cmd in cmds:
            head = cmd[0]
            if isinstance(head, _Func):
                value = self.call(head.text, cmd[1:], dot, value)
            elif len(cmd) > 1 or value is not _NOARG:
                raise _Fail(f"can't give argument to non-function {head.text}")
            else:
                value = self.arg(head, dot)
        return value

    def arg(self, node: _Arg, dot: Any) -> Any:
        if isinstance(node, _Lit):
            return node.value
        if isinstance(node, _Field):
            return self.chain(dot, node.names)
        if isinstance(node, _Var):
            value = next((v for name, v in reversed(self.vars) if name == node.name), NO_VALUE)
            return self.chain(value, node.names)
        if isinstance(node, _Sub):
            return self.chain(self.run(node.cmds, dot), node.names)
        return self.call(node.text, [], dot, _NOARG)  # a function as an argument is called bare

    def chain(self, value: Any, names: tuple[str, ...]) -> Any:
        for name in names:
            if isinstance(value, dict) and name in value:
                value = value[name]
            elif isinstance(value, dict) or value is None or value is NO_VALUE:
                if self.strict:
                    raise _Fail(f'map has no entry for key "{name}"')
                value = NO_VALUE
            else:
                raise _Fail(f"can't evaluate field {name} in type {_go_type(value)}")
        return value

    def call(self, name: str, args: list[_Arg], dot: Any, final: Any) -> Any:
        fn, least, most = _FUNCS[name]
        count = len(args) + (final is not _NOARG)
        if count < least or 0 <= most < count:
            want = f"at least {least}" if most < 0 else str(least) if least == most else f"{least} to {most}"
            raise _Fail(f"wrong number of args for {name}: want {want} got {count}")
        if name in ("and", "or"):  # short-circuit: the first false (and) / true (or) value, else the last
            value: Any = None
            for i in range(count):
                value = self.arg(args[i], dot) if i < len(args) else final
                if _truth(value) == (name == "or"):
                    break
            return value
        values = [self.arg(a, dot) for a in args] + ([] if final is _NOARG else [final])
        try:
            return fn(*(None if v is NO_VALUE else v for v in values))
        except _Fail as exc:
            raise _Fail(f"error calling {name}: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, OverflowError, UnicodeError) as exc:
            raise _Fail(f"error calling {name}: {exc}") from None


# ---------------------------------------------------------------- public API


class Template:
    """A compiled template; :meth:`render` it any number of times."""

    __slots__ = ("source", "strict", "_nodes")

    def __init__(self, source: str, nodes: list[_Node], strict: bool) -> None:
        self.source, self.strict, self._nodes = source, strict, nodes

    def render(self, data: Any) -> str:
        """Execute against data; raises UsageError on an execution error."""
        ex = _Exec(self, data)
        try:
            ex.walk(self._nodes, data)
        except RecursionError:
            raise UsageError("template error: data or template nests too deeply") from None
        return "".join(ex.out)


def compile_template(template: str, *, strict: bool = False) -> Template:
    """Parse a Go template; raises UsageError (one line, with column) on a syntax error.

    strict=True is Go's ``missingkey=error``: a missing key fails instead of
    printing ``<no value>``.
    """
    try:
        nodes = _Parser(template).parse()
    except _SyntaxErr as exc:
        raise _located("template syntax error", template, exc.pos, exc.start, exc.end, str(exc)) from None
    except RecursionError:
        raise UsageError("template syntax error: nested too deeply") from None
    return Template(template, nodes, strict)


def render(template: str, data: Any, *, strict: bool = False) -> str:
    """compile_template(template).render(data)."""
    return compile_template(template, strict=strict).render(data)


_ACTION = re.compile(r"(\{\{.*?\}\})", re.S)
_JSON_FORMAT = re.compile(r"\s*(json|\{\{\s*json *\.?\s*\}\})\s*")


def normalize_format(fmt: str) -> str:
    """What containers/common does to a user's --format before parsing it.

    ``\\t`` and ``\\n`` typed literally outside actions become a tab and a
    newline, and a trailing newline is added unless there is one.
    """
    parts = _ACTION.split(fmt)
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("\\t", "\t").replace("\\n", "\n")
    text = "".join(parts)
    return text if text.endswith("\n") else text + "\n"


def is_json_format(fmt: str) -> bool:
    """skopeo prints indented JSON, not the template, for ``json`` and ``{{json .}}``."""
    return _JSON_FORMAT.fullmatch(fmt) is not None
