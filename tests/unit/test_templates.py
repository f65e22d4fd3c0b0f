"""Template definitions (files, validation, lint) and strict sandboxed rendering."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import SecurityError
from markupsafe import Markup

from clarion.errors import ClarionError, RenderError, TemplateError
from clarion.models import Channel, Purpose
from clarion.templates import (
    EmailVariant,
    RenderedEmail,
    RenderedSms,
    SmsVariant,
    TemplateDefinition,
    load_template_dir,
    load_template_file,
    render,
    resolve_locale,
)
from clarion.templates.render import MEMO_REST, MEMO_SIZE, _compiled, _Memo, _memo, _render_one

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "templates"

GOOD = """\
description: A test template
purpose: transactional
category: orders
default_locale: en
locales:
  en:
    email:
      subject: "Order {{ order_id }}"
      text: "Hi {{ customer.first_name }}"
      html: "<p>Hi {{ customer.first_name }}</p>"
    sms:
      body: "Order {{ order_id }}"
  fr:
    sms:
      body: "Commande {{ order_id }}"
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def definition(**overrides: object) -> TemplateDefinition:
    data: dict[str, object] = {
        "name": "t",
        "purpose": "service",
        "locales": {"en": {"sms": {"body": "Hello {{ name }}"}}},
    }
    data.update(overrides)
    return TemplateDefinition.model_validate(data)


# -- rendering


def test_render_email_autoescapes_html_but_not_text() -> None:
    variant = EmailVariant(
        subject="For {{ name }}",
        text="Hi {{ name }}, total {{ total }}",
        html="<p>Hi {{ name }}</p>",
    )
    rendered = render(variant, {"name": "<b>Tom & Jerry</b>", "total": "5 < 6"})
    assert rendered == RenderedEmail(
        subject="For <b>Tom & Jerry</b>",
        text="Hi <b>Tom & Jerry</b>, total 5 < 6",
        html="<p>Hi &lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>",
    )


def test_render_email_without_html_has_html_none() -> None:
    rendered = render(EmailVariant(subject="S", text="T {{ x }}\n"), {"x": 1})
    assert isinstance(rendered, RenderedEmail)
    assert rendered.html is None
    assert rendered.text == "T 1\n"  # trailing newline kept in the body


def test_render_subject_is_one_stripped_line() -> None:
    variant = EmailVariant(subject="  Hello\n{{ name }}\n", text="t")
    rendered = render(variant, {"name": "Ann"})
    assert isinstance(rendered, RenderedEmail)
    assert rendered.subject == "Hello Ann"


def test_render_sms_strips_body() -> None:
    rendered = render(SmsVariant(body="  Code {{ code }}  \n"), {"code": "1234"})
    assert rendered == RenderedSms(body="Code 1234")


def test_render_nested_variables_and_filters() -> None:
    variant = SmsVariant(body="{{ customer.first_name | upper }} {{ missing | default('x') }}")
    assert render(variant, {"customer": {"first_name": "ann"}}) == RenderedSms(body="ANN x")


def test_jinja_globals_and_variables_do_not_leak_between_renders() -> None:
    # Each render gets Jinja's globals (range, namespace, ...) and only its own variables.
    variant = SmsVariant(
        body="{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
        "{% endfor %}{{ ns.n }} {{ name | default('none') }}"
    )
    assert render(variant, {"name": "Ann"}) == RenderedSms(body="3 Ann")
    assert render(variant, {}) == RenderedSms(body="3 none")
    assert render(SmsVariant(body="{{ range }}"), {"range": "mine"}) == RenderedSms(body="mine")


def test_missing_variable_names_field_path_and_variable() -> None:
    variant = EmailVariant(subject="Order {{ order_id }}", text="t")
    with pytest.raises(RenderError) as info:
        render(variant, {}, where="locales.en.email")
    message = str(info.value)
    assert message.startswith("locales.en.email.subject: missing variable")
    assert "'order_id' is undefined" in message


def test_missing_variable_in_html_names_html_field() -> None:
    variant = EmailVariant(subject="s", text="t", html="<p>{{ link }}</p>")
    with pytest.raises(RenderError, match=r"^locales\.fr\.email\.html: .*'link' is undefined"):
        render(variant, {}, where="locales.fr.email")


def test_missing_attribute_names_the_attribute() -> None:
    variant = SmsVariant(body="Hi {{ customer.first_name }}")
    with pytest.raises(RenderError, match=r"^body: missing variable: .*'first_name'"):
        render(variant, {"customer": {"last_name": "X"}})


def test_missing_variable_used_in_an_if_is_still_an_error() -> None:
    variant = SmsVariant(body="{% if vip %}VIP{% endif %} hello")
    with pytest.raises(RenderError, match="'vip' is undefined"):
        render(variant, {})


def test_render_error_is_a_template_error_and_a_clarion_error() -> None:
    assert issubclass(RenderError, TemplateError)
    assert issubclass(RenderError, ClarionError)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ x.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_refuses_unsafe_attribute_access(source: str) -> None:
    with pytest.raises(RenderError, match="unsafe") as info:
        render(SmsVariant(body=source), {"x": object()})
    assert isinstance(info.value.__cause__, SecurityError)
    assert isinstance(info.value.__cause__, JinjaTemplateError)


def test_sandbox_refuses_unsafe_access_in_html_too() -> None:
    variant = EmailVariant(subject="s", text="t", html="{{ ''.__class__.__mro__ }}")
    with pytest.raises(RenderError, match=r"^html: .*unsafe"):
        render(variant, {})


def test_render_refuses_unknown_variant_type() -> None:
    with pytest.raises(TypeError, match="cannot render dict"):
        render({"body": "x"}, {})


def test_render_does_not_mutate_or_need_extra_variables() -> None:
    context = {"name": "Ann", "unused": [1, 2]}
    render(SmsVariant(body="{{ name }}"), context)
    assert context == {"name": "Ann", "unused": [1, 2]}


# -- the memo of pure templates

MEMO_SOURCES = [
    "Hello {{ customer.first_name | default('there') }}.{% if broadcast.ack_url is defined %}"
    " Confirm: {{ broadcast.ack_url }}{% endif %}",
    "{{ a }} {{ a.b }} {{ a['b'] }} {{ a.b.c | default('-') }}",
    "{{ n + 1 if n is number else n }} {{ n == 1 }} {{ n is sameas true }} {{ n | string }}",
    "{{ x ~ '!' }}{% if x and not y %} yes{% elif y %} y{% else %} no{% endif %}",
    "{{ x | default('d', true) | upper | replace('A', '4') | truncate(12) }}",
    "{{ (x or 'none') | e }} {{ x is defined }} {{ x is none }} {{ y | tojson }}",
]
MEMO_VALUES: list[object] = [
    "Ann", "", "<b>&</b>", 0, 1, True, False, None, 1.0, 0.0, -0.0, ["l"], {"b": "d"},
    {"b": {"c": "deep"}}, {"items": 1}, Markup("<i>safe</i>"), object(),
]  # fmt: skip
MISSING_VALUE = object()


def _fresh_memo(source: str) -> _Memo:
    memo = _memo(source, False)
    assert memo is not None
    memo.outputs.clear()
    memo.hits = memo.resting = 0
    return memo


def _vars(names: tuple[str, ...], values: tuple[object, ...]) -> dict[str, object]:
    out: dict[str, object] = {"customer": {}, "broadcast": {}}
    for name, value in zip(names, values, strict=True):
        if value is MISSING_VALUE:
            continue
        if "." in name:
            root, leaf = name.split(".")
            out[root] = {**out[root], leaf: value}  # type: ignore[dict-item]
        else:
            out[name] = value
    return out


@pytest.mark.parametrize("html", [False, True])
@pytest.mark.parametrize("source", MEMO_SOURCES)
def test_memo_renders_what_jinja_renders(source: str, html: bool) -> None:
    # Every combination of awkward values (equal but rendered differently: 1, 1.0 and
    # True; 0.0 and -0.0; a Markup string; a dict; a list; missing), rendered twice
    # through the memo, gives Jinja's own output (or the same error).
    rng = random.Random(source)
    names = ("customer.first_name", "broadcast.ack_url", "a", "n", "x", "y")
    compiled = _compiled(source, html)
    for _ in range(400):
        values = tuple(rng.choice([*MEMO_VALUES, MISSING_VALUE]) for _ in names)
        variables = _vars(names, values)
        try:
            expected: object = compiled.render(**variables)
        except Exception as exc:  # a failing render must fail the same way
            expected = type(exc)
        for _ in range(2):
            try:
                got: object = _render_one(source, variables, html=html, field="f")
            except RenderError as exc:
                got = type(exc.__cause__)
            except Exception as exc:
                got = type(exc)
            assert got == expected, (source, variables)


def test_memo_renders_a_pure_template_once_per_distinct_values() -> None:
    source = "Hi {{ customer.first_name }}{% if customer.vip %}, valued{% endif %} {{ n }}"
    memo = _fresh_memo(source)
    assert memo.paths == (("customer", "first_name"), ("customer", "vip"), ("n",))
    for i in range(100):
        customer = {"first_name": "Ann" if i % 2 else "Bob", "vip": i % 4 == 1, "id": i}
        out = render(SmsVariant(body=source), {"customer": customer, "n": 1})
        assert out == RenderedSms(
            body=f"Hi {customer['first_name']}" + (", valued" if i % 4 == 1 else "") + " 1"
        )
    assert len(memo.outputs) == 3  # Bob; Ann; Ann valued - the id is not read
    # The values are the key, not the dicts they sit in: a changed value renders afresh.
    assert (
        render(SmsVariant(body=source), {"customer": {"first_name": "Cy", "vip": 0}, "n": 1}).body
        == "Hi Cy 1"
    )
    assert (
        render(
            SmsVariant(body=source), {"customer": {"first_name": "Ann", "vip": 0}, "n": True}
        ).body
        == "Hi Ann True"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{% for t in tags %}{{ t }}{% endfor %}",
        "{{ lipsum(1) }}",
        "{{ [1, 2, 3] | random }}",
        "{{ x | map('upper') | join }}",
        "{% set y = x %}{{ y }}",
        "{{ customer.items }}",
        "{{ customer['values'] }}",
        "{{ customer[key] }}",
        "{{ x.upper() }}",
        "{% filter upper %}{{ x }}{% endfilter %}",
        "{{ x[1:] }}",
        "{{ {'a': x} }}",
        "{% macro m() %}{{ x }}{% endmacro %}{{ m() }}",
        "{{ x | upper(*args) }}",
    ],
)
def test_memo_is_not_used_for_templates_that_are_not_plain_functions_of_names(source: str) -> None:
    assert _memo(source, False) is None


def test_memo_leaves_out_values_that_are_not_plain_scalars() -> None:
    source = "{{ customer.name }}"
    memo = _fresh_memo(source)
    render(SmsVariant(body=source), {"customer": {"name": ["a", "b"]}})
    render(SmsVariant(body=source), {"customer": {"name": 1.5}})
    render(SmsVariant(body=source), {"customer": {"name": Markup("x")}})
    assert memo.outputs == {}
    assert render(SmsVariant(body=source), {"customer": {"name": ["a", "b"]}}).body == "['a', 'b']"


def test_memo_is_bounded_and_rests_when_it_hardly_ever_hits() -> None:
    source = "{{ n }}!"
    memo = _fresh_memo(source)
    for n in range(MEMO_SIZE):  # a value of each recipient's own: never a hit
        assert render(SmsVariant(body=source), {"n": n}).body == f"{n}!"
    assert len(memo.outputs) == MEMO_SIZE and memo.resting == 0
    assert render(SmsVariant(body=source), {"n": -1}).body == "-1!"
    assert len(memo.outputs) == 1 and memo.resting == MEMO_REST  # full: afresh, and resting
    for n in range(10):
        assert render(SmsVariant(body=source), {"n": n % 2}).body == f"{n % 2}!"
    assert len(memo.outputs) == 1 and memo.resting == MEMO_REST - 10  # not consulted


def test_memo_that_hits_keeps_working_when_full() -> None:
    source = "{{ n }}?"
    memo = _fresh_memo(source)
    for n in range(3 * MEMO_SIZE):  # every value twice in a row: half of the renders hit
        assert render(SmsVariant(body=source), {"n": n // 2}).body == f"{n // 2}?"
    assert memo.resting == 0 and memo.hits > 0


# -- locale fallback


@pytest.mark.parametrize(
    ("available", "requested", "expected"),
    [
        (["en", "fr", "fr-CA"], "fr-CA", "fr-CA"),  # exact
        (["en", "fr", "fr-FR"], "fr-CA", "fr"),  # language
        (["en", "fr-FR"], "fr-CA", "fr-FR"),  # any region of the language
        (["en", "de"], "fr-CA", "en"),  # default
        (["en", "pt-BR"], "pt_br", "pt-BR"),  # case and '_' insensitive
        (["en", "pt_BR"], "PT-br", "pt_BR"),  # returns the tag as written
        (["en", "FR"], "fr", "FR"),
        (["en", "fr"], "FR_be", "fr"),
        (["en", "fr"], None, "en"),
        (["en", "fr"], "", "en"),
        (["en", "fr-FR", "fr-BE"], "fr", "fr-BE"),  # sorted: deterministic
    ],
)
def test_resolve_locale(available: list[str], requested: str | None, expected: str) -> None:
    assert resolve_locale(available, requested, "en") == expected


def test_resolve_locale_does_not_match_a_language_prefix_of_another_language() -> None:
    # "e" is not the language of "en"; "es-MX" has language "es".
    assert resolve_locale(["en", "es"], "es-MX", "en") == "es"
    assert resolve_locale(["en", "enm"], "en-GB", "xx") == "en"


# -- definitions


def test_definition_channels_and_content_hash() -> None:
    d = definition(
        locales={
            "en": {"sms": {"body": "a"}},
            "fr": {"email": {"subject": "s", "text": "t"}},
        }
    )
    assert d.channels == {Channel.SMS, Channel.EMAIL}
    assert (
        d.content_hash()
        == definition(
            locales={
                "en": {"sms": {"body": "a"}},
                "fr": {"email": {"subject": "s", "text": "t"}},
            }
        ).content_hash()
    )
    assert len(d.content_hash()) == 64


def test_content_hash_changes_with_content_but_not_with_name() -> None:
    base = definition()
    assert base.content_hash() == definition(name="other-name").content_hash()
    assert (
        base.content_hash()
        != definition(locales={"en": {"sms": {"body": "Hello {{ name }}!"}}}).content_hash()
    )
    assert base.content_hash() != definition(purpose="marketing").content_hash()
    assert base.content_hash() != definition(category="x").content_hash()
    assert "name" not in base.content()


def test_content_hash_does_not_depend_on_key_order() -> None:
    a = definition(locales={"en": {"sms": {"body": "a"}}, "fr": {"sms": {"body": "b"}}})
    b = definition(locales={"fr": {"sms": {"body": "b"}}, "en": {"sms": {"body": "a"}}})
    assert a.content_hash() == b.content_hash()


def test_locale_needs_at_least_one_channel() -> None:
    with pytest.raises(ValueError, match="at least one channel variant"):
        definition(locales={"en": {}})


def test_definition_refuses_bad_name_and_bad_locale_tag() -> None:
    with pytest.raises(ValueError, match="is not a template name"):
        definition(name="Bad Name")
    with pytest.raises(ValueError, match="'english!' is not a locale tag"):
        definition(locales={"english!": {"sms": {"body": "x"}}})


def test_lint_names_locale_channel_field_and_line() -> None:
    d = definition(
        locales={"en": {"email": {"subject": "s", "text": "ok\n{{ broken ", "html": "<p/>"}}}
    )
    with pytest.raises(TemplateError, match=r"^where\.yaml: locales\.en\.email\.text: line 2: "):
        d.lint("where.yaml")


# -- files


def test_load_template_file_reads_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, "order-shipped.yaml", GOOD)
    d = load_template_file(path)
    assert d.name == "order-shipped"  # from the file name
    assert d.purpose is Purpose.TRANSACTIONAL
    assert d.category == "orders"
    assert set(d.locales) == {"en", "fr"}
    assert d.channels == {Channel.EMAIL, Channel.SMS}
    en_email = d.locales["en"].for_channel(Channel.EMAIL)
    assert isinstance(en_email, EmailVariant)
    rendered = render(en_email, {"order_id": "A1", "customer": {"first_name": "<Ann>"}})
    assert rendered == RenderedEmail(
        subject="Order A1", text="Hi <Ann>", html="<p>Hi &lt;Ann&gt;</p>"
    )
    assert d.locales["fr"].for_channel(Channel.EMAIL) is None


def test_explicit_name_in_file_wins_over_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, "file-name.yaml", "name: real-name\n" + GOOD)
    assert load_template_file(path).name == "real-name"


def test_bad_purpose_names_file_field_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", GOOD.replace("purpose: transactional", "purpose: promo"))
    with pytest.raises(TemplateError) as info:
        load_template_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: purpose: ")
    assert "'promo'" in message


def test_default_locale_missing_from_locales(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", GOOD.replace("default_locale: en", "default_locale: de"))
    with pytest.raises(TemplateError) as info:
        load_template_file(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "default_locale 'de' has no variants" in message
    assert "['en', 'fr']" in message


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", GOOD + "colour: blue\n")
    with pytest.raises(TemplateError, match=r": colour: Extra inputs are not permitted") as info:
        load_template_file(path)
    assert str(info.value).startswith(str(path))
    assert "'blue'" in str(info.value)


def test_unknown_nested_key_names_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", GOOD.replace('      body: "Order', '      bodyy: "Order'))
    with pytest.raises(TemplateError, match=r"locales\.en\.sms\.bodyy: Extra inputs"):
        load_template_file(path)


def test_syntax_error_is_caught_at_lint_with_locale_channel_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.yaml",
        GOOD.replace('html: "<p>Hi {{ customer.first_name }}</p>"', 'html: "<p>{{ x + }}</p>"'),
    )
    with pytest.raises(TemplateError) as info:
        load_template_file(path)
    assert not isinstance(info.value, RenderError)
    assert str(info.value).startswith(f"{path}: locales.en.email.html: line 1: ")


def test_unclosed_block_in_sms_is_caught_at_lint(tmp_path: Path) -> None:
    path = write(
        tmp_path, "t.yaml", GOOD.replace('body: "Commande {{ order_id }}"', 'body: "{% if x %}"')
    )
    with pytest.raises(TemplateError, match=r": locales\.fr\.sms\.body: line 1: "):
        load_template_file(path)


def test_unknown_filter_is_refused_at_lint(tmp_path: Path) -> None:
    path = write(
        tmp_path, "t.yaml", GOOD.replace('{{ order_id }}"\n  fr', '{{ order_id | nosuch }}"\n  fr')
    )
    assert "nosuch" in path.read_text()
    with pytest.raises(TemplateError, match=r"locales\.en\.sms\.body: line 1: No filter named"):
        load_template_file(path)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "purpose: [unclosed\n")
    with pytest.raises(TemplateError, match=r"not valid YAML") as info:
        load_template_file(path)
    assert str(info.value).startswith(str(path))


def test_non_mapping_top_level_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "- a\n- b\n")
    with pytest.raises(TemplateError, match=r"expected a mapping at the top level"):
        load_template_file(path)


def test_bad_file_name_used_as_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "Bad Name.yaml", GOOD)
    with pytest.raises(TemplateError, match=r"name: .*is not a template name"):
        load_template_file(path)


# -- directories


def test_example_templates_all_load() -> None:
    definitions = load_template_dir(EXAMPLES)
    names = [d.name for d in definitions]
    assert {"order-shipped", "spring-sale", "welcome"} <= set(names)
    by_name = {d.name: d for d in definitions}
    assert by_name["spring-sale"].purpose is Purpose.MARKETING
    assert by_name["order-shipped"].purpose is Purpose.TRANSACTIONAL
    assert by_name["welcome"].purpose is Purpose.SERVICE
    assert set(by_name["welcome"].locales) == {"en", "fr"}


def test_example_templates_render_with_their_variables() -> None:
    welcome = {d.name: d for d in load_template_dir(EXAMPLES)}["welcome"]
    fr = welcome.locales[resolve_locale(welcome.locales, "fr-CA", welcome.default_locale)]
    sms = fr.for_channel(Channel.SMS)
    assert isinstance(sms, SmsVariant)
    rendered = render(sms, {"customer": {"first_name": "Zoé"}})
    assert rendered == RenderedSms(
        body="Bienvenue Zoé ! Votre compte est prêt : https://example.com/login"
    )


def test_load_template_dir_sorted_and_reads_yml(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", GOOD)
    write(tmp_path, "a.yml", GOOD)
    write(tmp_path, "notes.txt", "ignored")
    assert [d.name for d in load_template_dir(tmp_path)] == ["a", "b"]


def test_load_template_dir_refuses_duplicate_names(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", "name: same\n" + GOOD)
    write(tmp_path, "two.yaml", "name: same\n" + GOOD)
    with pytest.raises(TemplateError, match=r"template name 'same' is also used by") as info:
        load_template_dir(tmp_path)
    message = str(info.value)
    assert "one.yaml" in message
    assert "two.yaml" in message


def test_load_template_dir_refuses_same_stem_yaml_and_yml(tmp_path: Path) -> None:
    write(tmp_path, "x.yaml", GOOD)
    write(tmp_path, "x.yml", GOOD)
    with pytest.raises(TemplateError, match=r"template name 'x' is also used by"):
        load_template_dir(tmp_path)


def test_load_template_dir_refuses_empty_dir(tmp_path: Path) -> None:
    write(tmp_path, "readme.md", "no templates here")
    with pytest.raises(TemplateError, match=r"no template files") as info:
        load_template_dir(tmp_path)
    assert str(info.value).startswith(str(tmp_path))


def test_load_template_dir_refuses_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"not a directory"):
        load_template_dir(tmp_path / "nope")


def test_load_template_dir_propagates_a_bad_file(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    bad = write(tmp_path, "bad.yaml", GOOD.replace("purpose: transactional", "purpose: nope"))
    with pytest.raises(TemplateError) as info:
        load_template_dir(tmp_path)
    assert str(info.value).startswith(f"{bad}: purpose")


def test_content_hash_of_loaded_file_is_stable_and_changes_with_content(tmp_path: Path) -> None:
    first = load_template_file(write(tmp_path, "t.yaml", GOOD)).content_hash()
    again = load_template_file(write(tmp_path, "t.yaml", GOOD)).content_hash()
    changed = load_template_file(
        write(tmp_path, "t.yaml", GOOD.replace("Commande", "Commande n°"))
    ).content_hash()
    assert first == again
    assert first != changed
