"""The Go text/template subset behind ``--format``: constructs, Go's printing rules, errors."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regtool.cli.gotemplate import compile_template, is_json_format, normalize_format, render
from regtool.cli.inspect_cmd import TEMPLATE_HELP as HELP
from regtool.errors import UsageError

DATA: dict[str, Any] = {
    "Name": "docker.io/library/alpine",
    "Digest": "sha256:abc",
    "RepoTags": ["3.18", "latest"],
    "Labels": {"version": "1.2", "maintainer": "Ann <ann@example.com> & co"},
    "NoLabels": None,
    "Layers": ["sha256:l1", "sha256:l2"],
    "LayersData": [{"Digest": "sha256:l1", "Size": 10}, {"Digest": "sha256:l2", "Size": 20}],
    "Size": 30,
    "Ratio": 0.5,
    "Empty": [],
    "Nil": None,
    "Yes": True,
    "No": False,
    "Nested": {"A": {"B": "deep"}},
}


def r(template: str, data: Any = DATA, **kw: Any) -> str:
    return render(template, data, **kw)


def usage_error(template: str, data: Any = DATA, **kw: Any) -> str:
    with pytest.raises(UsageError) as info:
        render(template, data, **kw)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return message


# ---------------------------------------------------------------- data access


def test_text_and_fields() -> None:
    assert r("plain text") == "plain text"
    assert r("") == ""
    assert r("{{.Name}}@{{.Digest}}") == "docker.io/library/alpine@sha256:abc"
    assert r("{{.Nested.A.B}}") == "deep"
    assert r("{{ .Name }}") == "docker.io/library/alpine"
    assert r("{{.}}", "just me") == "just me"
    assert r("{{$}} {{$.Name}}", {"Name": "n"}) == "map[Name:n] n"


def test_missing_keys_print_no_value_like_a_go_map() -> None:
    assert r("{{.Missing}}") == "<no value>"
    assert r("{{.Missing.Deeper}}") == "<no value>"
    assert r("{{.Labels.nope}}") == "<no value>"
    assert r("{{.Nil.Field}}") == "<no value>"  # a nil map
    assert r("{{if .Missing}}y{{else}}n{{end}}") == "n"


def test_strict_makes_missing_keys_errors() -> None:
    assert 'map has no entry for key "Missing"' in usage_error("{{.Missing}}", strict=True)
    assert r("{{.Name}}", strict=True) == "docker.io/library/alpine"


def test_field_of_a_non_map_is_an_error() -> None:
    assert "can't evaluate field Foo in type string" in usage_error("{{.Name.Foo}}")
    assert "can't evaluate field X in type []interface {}" in usage_error("{{.Layers.X}}")


def test_index() -> None:
    assert r('{{index .Labels "version"}}') == "1.2"
    assert r("{{index .Layers 1}}") == "sha256:l2"
    assert r('{{index .LayersData 1 "Size"}}') == "20"
    assert r('{{index "abc" 1}}') == "98"  # a byte, as in Go
    assert r("{{index .Layers}}") == "[sha256:l1 sha256:l2]"


def test_index_of_a_missing_key_is_the_zero_value() -> None:
    # map[string]string (skopeo's Labels, also when nil) gives "", anything else <no value>
    assert r('[{{index .Labels "nope"}}]') == "[]"
    assert r('[{{index .NoLabels "nope"}}]') == "[]"
    assert r('[{{index .Labels "nope"}}]', {"Labels": {}}) == "[]"
    assert r('[{{index . "nope"}}]') == "[<no value>]"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{index .Layers 5}}", "error calling index: index out of range: 5"),
        ('{{index .Layers "x"}}', "cannot index slice/array with type string"),
        ("{{index .Size 1}}", "can't index item of type int"),
        ("{{index .Labels 1}}", "value has type int; should be string"),
    ],
)
def test_index_errors(template: str, message: str) -> None:
    assert message in usage_error(template)


# ---------------------------------------------------------------- control structures


def test_range() -> None:
    assert r("{{range .RepoTags}}<{{.}}>{{end}}") == "<3.18><latest>"
    assert r("{{range $i, $e := .RepoTags}}{{$i}}={{$e}} {{end}}") == "0=3.18 1=latest "
    assert r("{{range $e := .RepoTags}}{{$e}};{{end}}") == "3.18;latest;"
    assert r("{{range .LayersData}}{{.Digest}}:{{.Size}} {{end}}") == "sha256:l1:10 sha256:l2:20 "
    assert r("{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}") == (
        "maintainer=Ann <ann@example.com> & co;version=1.2;"
    )  # maps in key order
    assert r("{{range .Labels}}{{.}}|{{end}}") == "Ann <ann@example.com> & co|1.2|"
    assert r("{{range .RepoTags}}{{$.Size}}{{end}}") == "3030"


def test_range_else_and_empty_or_missing() -> None:
    assert r("{{range .Empty}}x{{else}}none{{end}}") == "none"
    assert r("{{range .Nil}}x{{else}}none{{end}}") == "none"
    assert r("{{range .Missing}}x{{else}}none{{end}}") == "none"
    assert r("{{range .Empty}}x{{end}}") == ""


def test_range_break_and_continue() -> None:
    data = {"N": [1, 2, 3, 4]}
    assert r("{{range .N}}{{if eq . 3}}{{break}}{{end}}{{.}}{{end}}", data) == "12"
    assert r("{{range .N}}{{if eq . 2}}{{continue}}{{end}}{{.}}{{end}}", data) == "134"


def test_range_over_a_scalar_is_an_error() -> None:
    assert "range can't iterate over 30" in usage_error("{{range .Size}}{{end}}")


def test_if_else_chain() -> None:
    template = "{{if eq .Size 1}}one{{else if eq .Size 30}}thirty{{else}}other{{end}}"
    assert r(template) == "thirty"
    assert r(template, {"Size": 2}) == "other"
    assert r("{{if .Yes}}y{{end}}{{if .No}}n{{end}}") == "y"


def test_with() -> None:
    assert r("{{with .Nested.A}}{{.B}}{{end}}") == "deep"
    assert r("{{with .Missing}}x{{else}}fallback {{.Size}}{{end}}") == "fallback 30"
    assert r("{{with $l := .Labels}}{{$l.version}}{{end}}") == "1.2"
    assert r("{{with .Empty}}x{{else with .Nested}}{{.A.B}}{{end}}") == "deep"


@pytest.mark.parametrize(
    ("value", "truth"),
    [
        (None, False), (False, False), (True, True), (0, False), (7, True), (0.0, False), (0.1, True),
        ("", False), ("x", True), ([], False), ([0], True), ({}, False), ({"k": 0}, True),
    ],
)  # fmt: skip
def test_truthiness_follows_go(value: Any, truth: bool) -> None:
    assert r("{{if .V}}T{{else}}F{{end}}", {"V": value}) == ("T" if truth else "F")


def test_variables_and_scope() -> None:
    assert r("{{$x := .Size}}{{$x}}") == "30"
    assert r("{{$x := 1}}{{if .Yes}}{{$x = 2}}{{end}}{{$x}}") == "2"
    assert r("{{$x := 1}}{{if .Yes}}{{$x := 2}}{{$x}}{{end}}{{$x}}") == "21"
    assert r("{{range $i, $e := .}}{{end}}{{$}}", ["root"]) == "[root]"
    assert "undefined variable $e" in usage_error("{{range $e := .Layers}}{{end}}{{$e}}")


# ---------------------------------------------------------------- pipelines, functions


def test_pipelines() -> None:
    assert r("{{.Labels | json}}") == '{"maintainer":"Ann <ann@example.com> & co","version":"1.2"}'
    assert r('{{"x" | printf "%s-%s" "y"}}') == "y-x"
    assert r("{{.Name | upper | lower}}") == "docker.io/library/alpine"
    assert r("{{(index .LayersData 0).Digest}}") == "sha256:l1"
    assert r("{{len (index .Layers 0)}}") == "9"


def test_json_is_compact_sorted_and_not_html_escaped() -> None:
    data = {"b": [1, 2.5, None, True], "a": "<&>", "u": 'é\u2028\x01\n\t"\\', "f": 1.0, "e": {}}
    assert r("{{json .}}", data) == (
        '{"a":"<&>","b":[1,2.5,null,true],"e":{},"f":1,"u":"é\\u2028\\u0001\\n\\t\\"\\\\"}'
    )
    assert r("{{json .RepoTags}}") == '["3.18","latest"]'
    assert r("{{json .Missing}} {{json .Nil}} {{json .Name}}") == 'null null "docker.io/library/alpine"'


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e21, "1e+21"), (1e20, "100000000000000000000"), (1.5e-7, "1.5e-7"), (1e-6, "0.000001"), (-0.0, "-0")],
)
def test_json_floats_follow_encoding_json(value: float, text: str) -> None:
    assert r("{{json .V}}", {"V": value}) == text


def test_json_rejects_nan() -> None:
    assert "json: unsupported value: NaN" in usage_error("{{json .V}}", {"V": float("nan")})


def test_len_counts_bytes_of_strings_like_go() -> None:
    assert r('{{len .Layers}} {{len .Labels}} {{len "héllo"}}') == "2 2 6"
    assert "len of type int" in usage_error("{{len .Size}}")


def test_string_functions() -> None:
    assert r('{{join .RepoTags ", "}}') == "3.18, latest"
    assert r('{{.RepoTags | join ","}}') == "3.18,latest"  # separator first is accepted too
    assert r('{{join .Nil ","}}') == ""
    assert r('{{upper .Digest}} {{lower "ABC"}}') == "SHA256:ABC abc"
    assert r('{{title "hello wORLD-x y_z"}}') == "Hello WORLD-X Y_z"
    assert r('{{split "a,b,c" ","}} {{len (split "a,b" ",")}}') == "[a b c] 2"
    assert r('[{{pad "x" 1 2}}][{{pad "" 1 2}}]') == "[ x  ][]"
    assert r('{{truncate "abcdef" 3}} {{truncate "ab" 5}}') == "abc ab"
    assert "expected string; got int" in usage_error("{{upper .Size}}")
    assert "expected []string" in usage_error('{{join .LayersData ","}}')


def test_comparisons_and_logic() -> None:
    assert r('{{eq .Size 30}} {{eq .Name "x" "docker.io/library/alpine"}} {{ne 1 2}}') == "true true true"
    assert r('{{lt 1 2}} {{le 2 2}} {{gt "b" "a"}} {{ge 1 2.5}}') == "true true true false"
    assert r("{{eq .Nil nil}} {{eq .Missing nil}}") == "true true"
    assert r("{{not .Yes}} {{not .Empty}}") == "false true"
    assert r('{{and 1 0 "x"}} {{and 1 "x"}} [{{or 0 ""}}] {{or 0 "y" .Size}}') == "0 x [] y"
    # and/or stop evaluating at the first decisive value, as Go 1.18+ does
    assert r("{{or .Yes (index .Layers 99)}} {{and .No (index .Layers 99)}}") == "true false"
    assert "incompatible types for comparison" in usage_error('{{eq 1 "1"}}')
    assert "non-comparable type" in usage_error("{{eq .Layers .Layers}}")
    assert "invalid type for comparison" in usage_error("{{lt true false}}")


def test_print_and_println() -> None:
    assert r('{{print "a" 1 2 "b" .Nil}}') == "a1 2b<nil>"
    assert r('{{println "a" 1}}') == "a 1\n"


@pytest.mark.parametrize(
    ("template", "out"),
    [
        ('{{printf "%s|%d|%v|%q" "s" 42 .RepoTags "q\\""}}', 's|42|[3.18 latest]|"q\\""'),
        ('{{printf "%5s|%-5s|%05d|%+d|%x|%X|%#x" "ab" "ab" 42 7 255 255 255}}',
         "   ab|ab   |00042|+7|ff|FF|0xff"),
        ('{{printf "%.2f|%8.3f|%e|%g|%v" 3.14159 2.5 1234.5678 0.000012345 1e6}}',
         "3.14|   2.500|1.234568e+03|1.2345e-05|1e+06"),
        ('{{printf "%t|%c|%q|%U|%x" true 65 66 9731 "hi"}}', "true|A|'B'|U+2603|6869"),
        ('{{printf "%q" .RepoTags}}', '["3.18" "latest"]'),
        ('{{printf "%v" .Labels}}', "map[maintainer:Ann <ann@example.com> & co version:1.2]"),
        ('{{printf "%.3s" "abcdef"}}', "abc"),
        ('{{printf "100%%"}}', "100%"),
        ('{{printf "%d" "x"}}', "%!d(string=x)"),
        ('{{printf "%s"}}', "%!s(MISSING)"),
        ('{{printf "%d" 1 2}}', "1%!(EXTRA int=2)"),
        ('{{printf "%s" .Nil}}', "%!s(<nil>)"),
        ('{{printf "%v" .Nil}}', "<nil>"),
        ('{{printf "%d" .Labels}}', "map[%!d(string=maintainer):%!d(string=Ann <ann@example.com> & co) "
         "%!d(string=version):%!d(string=1.2)]"),  # Go applies the verb to keys and values
    ],
)  # fmt: skip
def test_printf(template: str, out: str) -> None:
    assert r(template) == out


# ---------------------------------------------------------------- Go's %v printing


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("str", "str"), (42, "42"), (-7, "-7"), (True, "true"), (False, "false"), (None, "<nil>"),
        (0.5, "0.5"), (3.0, "3"), (1e6, "1e+06"), (123456.0, "123456"), (123456789.0, "1.23456789e+08"),
        (0.0001, "0.0001"), (0.00001, "1e-05"), (float("inf"), "+Inf"), (float("nan"), "NaN"),
        (["a", "b", 1], "[a b 1]"), ([], "[]"), ([["x"], {"k": None}], "[[x] map[k:<nil>]]"),
        ({"b": 2, "a": [1, 2]}, "map[a:[1 2] b:2]"), ({}, "map[]"),
        (datetime(2023, 5, 1, 12, 34, 56, 789000, tzinfo=timezone.utc),
         "2023-05-01 12:34:56.789 +0000 UTC"),
        (datetime(2023, 5, 1, 1, 2, 3, tzinfo=timezone(timedelta(hours=2))),
         "2023-05-01 01:02:03 +0200 +0200"),
    ],
)  # fmt: skip
def test_values_print_like_go_fmt(value: Any, text: str) -> None:
    assert r("{{.V}}", {"V": value}) == text


def test_datetime_json_is_rfc3339() -> None:
    when = datetime(2023, 5, 1, 12, 34, 56, 789000, tzinfo=timezone.utc)
    assert r("{{json .}}", when) == '"2023-05-01T12:34:56.789Z"'


# ---------------------------------------------------------------- lexical details


def test_trim_markers() -> None:
    assert r("a  \n {{- .Size -}} \n  b") == "a30b"
    assert r("a {{- .Size}} b") == "a30 b"
    assert r("a {{.Size -}} b") == "a 30b"
    assert r("{{range .RepoTags -}}\n  {{.}}\n{{- end}}") == "3.18latest"
    assert r("{{-3}}") == "-3"  # no space after the dash: a number, not a trim marker


def test_comments() -> None:
    assert r("a{{/* a comment */}}b") == "ab"
    assert r("a {{- /* trimmed\n both sides */ -}} b") == "ab"


def test_literals() -> None:
    assert r('{{"tab\\there\\n\\x41\\101\\u00e9\\U0001F600\\\\\\""}}') == 'tab\there\nAAé😀\\"'
    assert r("{{`raw \\n {{ }}`}}") == "raw \\n {{ }}"
    assert r("{{'a'}} {{'\\n'}}") == "97 10"
    assert (
        r("{{0x1F}} {{0o17}} {{017}} {{0b11}} {{1_000}} {{1.5e3}} {{.5}} {{+2}}")
        == "31 15 15 3 1000 1500 0.5 2"
    )
    assert r("{{true}} {{false}}") == "true false"
    assert r('{{"}}"}}') == "}}"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("template", "message", "where"),
    [
        ("{{.Name", "unclosed action", "column 1 in {{.Name"),
        ("abc {{nope .X}}", 'function "nope" not defined', "column 7 in {{nope .X}}"),
        ("{{range .Layers}}x", "unclosed {{range}}: missing {{end}}", "column 1"),
        ("{{if .X}}x", "unclosed {{if}}", "column 1"),
        ("x{{end}}", "unexpected {{end}}", "column 2"),
        ("{{else}}", "unexpected {{else}}", "column 1"),
        ("{{if 1}}a{{else}}b{{else}}c{{end}}", "expected {{end}}; found {{else}}", "column 19"),
        ("{{range .L}}a{{else if 1}}b{{end}}", "unexpected if in {{else}}", "column 21"),
        ("{{.X | }}", "missing value for command", ""),
        ("{{}}", "missing value for command", ""),
        ("{{if}}{{end}}", "missing value for if", ""),
        ('{{"abc}}', "unterminated quoted string", "column 3"),
        ("{{'ab'}}", "malformed character constant", ""),
        ('{{"\\q"}}', "invalid escape", ""),
        ("{{/* x }}", "unclosed comment", ""),
        ("{{/* x */ .X}}", "comment ends before closing delimiter", ""),
        ("{{$x}}", "undefined variable $x", "column 3"),
        ("{{$x = 1}}", "undefined variable $x", ""),
        ("{{$a, $b := .L}}", "too many declarations in command", ""),
        ("{{break}}", "{{break}} outside {{range}}", ""),
        ("{{range .L}}{{else}}{{continue}}{{end}}", "{{continue}} outside {{range}}", ""),
        ('{{template "x"}}', "{{template}} is not supported", ""),
        ("{{(.X}}", "unclosed left paren", ""),
        ("{{.X)}}", "unexpected ) in command", ""),
        ("{{1 | 2}}", "non executable command in pipeline stage 2", ""),
        ("{{nil}}", "nil is not a command", ""),
        ("{{.X#}}", "unexpected '#' after .X", "column 5"),
        ("{{#}}", "unexpected '#' in action", ""),
        ('{{index .L"k"}}', "unexpected '\"' after .L", ""),
        ("{{08}}", "bad number syntax", ""),
        ("{{.A..B}}", "bad field name", ""),
        ("{{len(.X)}}", "missing space before (", ""),
        ("{{.X | if}}", "unexpected {{if}} inside an action", ""),
        ("line one\n  {{nope}}", 'function "nope" not defined', "line 2, column 5"),
    ],
)
def test_syntax_errors_are_one_line_usage_errors(template: str, message: str, where: str) -> None:
    with pytest.raises(UsageError) as info:
        compile_template(template)
    text = str(info.value)
    assert len(text.splitlines()) == 1, text
    assert text.startswith("template syntax error at ")
    assert message in text
    assert where in text


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{len}}", "wrong number of args for len: want 1 got 0"),
        ("{{eq 1}}", "wrong number of args for eq: want at least 2 got 1"),
        ("{{.Size | .Name}}", "can't give argument to non-function .Name"),
        ('{{"a" "b"}}', 'can\'t give argument to non-function "a"'),
        ("{{truncate .Name -1}}", "error calling truncate"),
    ],
)
def test_execution_errors(template: str, message: str) -> None:
    text = usage_error(template)
    assert text.startswith("template error at column ")
    assert message in text


def test_execution_error_quotes_the_action_and_escapes_newlines() -> None:
    text = usage_error("ok\n{{range\n.Size}}{{end}}")
    assert "line 2, column 1 in {{range\\n.Size}}" in text


def test_compile_once_render_many() -> None:
    template = compile_template("{{.A}}-{{len .B}}")
    assert template.render({"A": 1, "B": [1, 2]}) == "1-2"
    assert template.render({"A": "x", "B": ""}) == "x-0"


# ---------------------------------------------------------------- CLI helpers


def test_normalize_format_like_containers_common() -> None:
    assert normalize_format("{{.Name}}") == "{{.Name}}\n"
    assert normalize_format("{{.Name}}\n") == "{{.Name}}\n"
    assert normalize_format("{{.Name}}\\t{{.Digest}}") == "{{.Name}}\t{{.Digest}}\n"
    assert normalize_format('{{printf "\\n"}}') == '{{printf "\\n"}}\n'  # escapes inside actions stay


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("json", True), (" {{json .}} ", True), ("{{json}}", True), ("{{ json . }}", True),
     ("{{json .Labels}}", False), ("{{.Name}}", False)],
)  # fmt: skip
def test_is_json_format(fmt: str, expected: bool) -> None:
    assert is_json_format(fmt) is expected


def test_help_examples_compile() -> None:
    examples = re.findall(r"--format '([^']*)'", HELP)
    assert len(examples) >= 2
    for example in examples:
        compile_template(example)
    assert "join" in HELP and "json" in HELP


# ---------------------------------------------------------------- fuzzing

FRAGMENTS = [
    "{{", "}}", "{{- ", " -}}", ".", ".Name", ".Labels", ".Layers", ".Size", ".Nil", ".Missing", "$", "$x",
    "$i", ":=", "=", ",", "|", "(", ")", " ", "\n", "-", "1", "0x1", "2.5", "'a'", '"', '"s"', "\\", "`",
    "range", "if", "else", "end", "with", "break", "continue", "nil", "true", "json", "index", "len",
    "printf",
    '"%d %s %v %q %x %5.2f"', "join", "eq", "lt", "and", "or", "not", "print", "split", "title", "pad",
    "truncate", "upper", "/*", "*/", "x", "#", "%", "{{range .Layers}}", "{{end}}", "{{.}}", "{{else}}",
]  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=24).map("".join))
def test_random_templates_render_or_raise_usage_error(template: str) -> None:
    try:
        out = render(template, DATA)
    except UsageError as exc:
        assert len(str(exc).splitlines()) == 1
    else:
        assert isinstance(out, str)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="{}.$|()-\"'` \nabcLx1:=,/*#\\", max_size=40))
def test_random_text_templates_render_or_raise_usage_error(template: str) -> None:
    try:
        render(template, DATA)
    except UsageError as exc:
        assert len(str(exc).splitlines()) == 1
