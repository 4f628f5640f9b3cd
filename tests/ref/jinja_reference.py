#!/usr/bin/env python3
"""Reference renderings of tests/jinja/cases.json for the C Jinja engine.

Each case's template (or the shared templates[template_ref]) is rendered by
Jinja2 in the environment transformers' apply_chat_template uses:
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the
loopcontrols extension and a {% generation %} tag (transformers'
AssistantTracker, which renders its body), the tojson filter replaced by
json.dumps(ensure_ascii=False, ...), and the globals raise_exception and
strftime_now.  The variables are default_context updated by the case's
context.

Writes tests/jinja/expect.json: one result per case, in order, with the
rendered "text", or "error" (str of the exception) and "error_type" (its
class name).

    python3 tests/ref/jinja_reference.py            # needs jinja2 (3.1.x)

The C test merges the contexts with cJSON, so a context may not hold a float
with an integral value (cJSON would print 2.0 as 2) nor an int beyond 2**53;
this script refuses such data.
"""
import argparse
import datetime
import json
import os
import sys

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "jinja")


class GenerationTag(Extension):
    """transformers' {% generation %} block, rendered as its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_body", [])
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def check_context(value, where):
    """Only values that survive a round trip through cJSON unchanged."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, float):
        if value == int(value):
            sys.exit(f"{where}: integral float {value!r} (write it in the template instead)")
        return
    if isinstance(value, int):
        if abs(value) > 2 ** 53:
            sys.exit(f"{where}: int {value} is beyond 2**53")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_context(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            check_context(v, f"{where}.{k}")
        return
    sys.exit(f"{where}: unexpected {type(value).__name__}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=os.path.join(DATA, "cases.json"))
    ap.add_argument("--out", default=os.path.join(DATA, "expect.json"))
    args = ap.parse_args()

    with open(args.cases, encoding="utf-8") as f:
        data = json.load(f)
    env = make_env()
    default = data["default_context"]
    check_context(default, "default_context")
    results = []
    for case in data["cases"]:
        name = case["name"]
        ctx = dict(default)
        ctx.update(case.get("context", {}))
        check_context(case.get("context", {}), name)
        source = case["template"] if "template" in case else data["templates"][case["template_ref"]]
        try:
            text = env.from_string(source).render(**ctx)
            results.append({"name": name, "text": text})
        except Exception as e:  # every failure is an expected outcome
            results.append({"name": name, "error": str(e), "error_type": type(e).__name__})

    with open(args.out, "w", encoding="utf-8") as f:
        f.write("{\n")
        f.write('"generated_by": ' + json.dumps(
            f"tests/ref/jinja_reference.py; python {sys.version.split()[0]}, jinja2 {jinja2.__version__}") + ",\n")
        f.write('"results": [\n')
        for i, r in enumerate(results):
            f.write(json.dumps(r, ensure_ascii=False) + (",\n" if i + 1 < len(results) else "\n"))
        f.write("]\n}\n")
    n_err = sum(1 for r in results if "error" in r)
    print(f"{len(results)} cases ({n_err} errors) -> {args.out}")


if __name__ == "__main__":
    main()
