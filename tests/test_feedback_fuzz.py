"""A bounded fuzz test of the annotation app's JSON API, drawn from the app's own OpenAPI schema: every
operation under /api/, path parameters and request bodies made from their schemas, mixed with what a schema
does not allow (NaN, Infinity, lone surrogates, booleans for integers, numbers as text, raw bytes) and with
odd headers. No answer may be a 5xx, and every answer must carry the security headers.

Derandomized with a fixed number of examples and no deadline: the same requests on every run, a few seconds.
"""

import json
import re
import time
from urllib.parse import quote

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhaif.data.records import CompletionRecord
from rlhaif.feedback.human.app import Settings, create_app
from rlhaif.feedback.human.security import HEADERS
from rlhaif.feedback.human.store import Store

EXAMPLES = 300

SURROGATE_TEXT = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
ODD_TEXT = st.one_of(st.text(max_size=12), SURROGATE_TEXT, st.sampled_from(["1", "1.0", "NaN", "-1", "true", "F", "A"]),
                     st.tuples(st.text(max_size=8), SURROGATE_TEXT).map("".join))
ODD_SCALAR = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), True, False, None, 1.0, 0.5,
                                        -1, 0, 2**31, 2**63, 10**400]),
                       st.integers(), st.floats(), ODD_TEXT)
ODD = st.recursive(ODD_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(ODD_TEXT, inner, max_size=4)), max_leaves=8)
# The submitted value's vocabulary (schemas.py): kinds' keys and screen positions, ranks, ratings.
VALUE_KEYS = st.sampled_from(["choice", "strength", "ranks", "rating", "thumb", "helpful", "honest", "harmless"])
VALUE_ITEMS = st.one_of(st.sampled_from(["A", "B", "C", "Z", "tie", "both_bad", "F", "f", "up", "down"]),
                        st.integers(-1, 11), ODD,
                        st.lists(st.one_of(st.integers(0, 4), st.just("F"), ODD_SCALAR), max_size=5))


def escaped(text: str) -> str:
    """Text as a URL would carry it (UTF-8, percent-escaped; a lone surrogate as its raw bytes)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def from_schema(schema: dict, components: dict, key: str = "") -> st.SearchStrategy:
    """Values that fit ``schema`` (an OpenAPI/JSON schema node), mixed with values that do not."""
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[1]], components, key)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, components, key) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "integer":
        lo, hi = int(schema.get("minimum", -2**40)), int(schema.get("maximum", 2**40))
        fits = st.one_of(st.integers(lo, min(hi, lo + 20)), st.integers(lo, hi))  # small ids are real assignments
        return st.one_of(fits, st.integers(lo - 3, lo), st.integers(hi, hi + 3), ODD)
    if kind == "string":
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 40)
        fits = (st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: lo <= len(s) <= hi)
                if "pattern" in schema else st.text(min_size=lo, max_size=hi))
        return st.one_of(fits, ODD_TEXT, ODD)
    if kind == "null":
        return st.none()
    if kind == "object" and "properties" in schema:
        props = {k: from_schema(v, components, k) for k, v in schema["properties"].items()}
        required = set(schema.get("required", []))
        fits = st.fixed_dictionaries({k: v for k, v in props.items() if k in required},
                                     optional={k: v for k, v in props.items() if k not in required})
        extra = st.dictionaries(ODD_TEXT, ODD, max_size=2)  # fields the schema forbids
        return st.one_of(fits, st.tuples(fits, extra).map(lambda d: {**d[1], **d[0]}), ODD)
    if kind == "object":  # free-form (the submitted value): the kinds' vocabulary, and anything else
        return st.one_of(st.dictionaries(VALUE_KEYS, VALUE_ITEMS, max_size=4), ODD)
    return ODD


def api_operations(app) -> list[tuple[str, str, dict]]:
    """(method, path, operation) of every JSON API operation in the app's own OpenAPI schema."""
    spec = app.openapi()
    return [(method.upper(), path, op) for path, ops in spec["paths"].items() if path.startswith("/api/")
            for method, op in ops.items()]


def request_for(method: str, path: str, op: dict, components: dict) -> st.SearchStrategy:
    """A request to one operation: its path parameters, its body (JSON text or raw bytes), odd headers."""
    params = {p["name"]: st.one_of(from_schema(p["schema"], components), ODD_TEXT)
              for p in op.get("parameters", []) if p["in"] == "path"}
    body = st.none()
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        doc = from_schema(content["application/json"]["schema"], components)
        body = st.one_of(doc.map(lambda d: json.dumps(d, allow_nan=True).encode()), st.binary(max_size=64))
    origins = ["null", "http://testserver", "https://evil.example", "\u00e9".encode()]
    headers = st.fixed_dictionaries({}, optional={"X-CSRF-Token": ODD_TEXT.map(escaped),
                                                  "Origin": st.sampled_from(origins),
                                                  "Host": st.sampled_from(["evil.example", ""])})
    return st.fixed_dictionaries({"method": st.just(method), "path": st.just(path), "body": body, "headers": headers,
                                  "params": st.fixed_dictionaries(params),
                                  "auth": st.sampled_from(["annotator", "admin", "none", "wrong"])})


def _recs(kind_prompts: int, k: int):
    return [CompletionRecord(prompt_id=f"p{i}", prompt=f"Question {i}?", response=f"answer {j} to {i}",
                             model=f"m{j}", index=j) for i in range(kind_prompts) for j in range(k)]


def test_json_api_never_answers_5xx_and_always_sends_the_security_headers(tmp_path):
    db = str(tmp_path / "fuzz.db")
    store = Store(db)
    store.migrate()
    tokens = {"annotator": store.add_annotator("ann"), "admin": store.add_annotator("boss", admin=True),
              "wrong": "not-a-token", "none": None}
    for kind, k in (("pairwise", 2), ("ranking", 3), ("rating", 1), ("thumbs", 1), ("aspects", 2)):
        store.create_campaign(kind, kind)
        store.import_completions(kind, _recs(3, k))
    app = create_app(Settings(db=db, bootstrap_rounds=5, sign_in_failures=10**9))
    client = TestClient(app, raise_server_exceptions=False)
    components = app.openapi()["components"]["schemas"]
    ops = api_operations(app)
    assert {(m, p) for m, p, _ in ops} >= {("GET", "/api/next"), ("GET", "/api/task/{assignment_id}"),
                                           ("GET", "/api/report"), ("POST", "/api/judgments"), ("GET", "/api/judgments")}
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.one_of([request_for(m, p, op, components) for m, p, op in ops]))
    def one_request(req):
        path = re.sub(r"\{(\w+)\}", lambda g: escaped(str(req["params"][g.group(1)])), req["path"])
        headers = dict(req["headers"])
        if tokens[req["auth"]] is not None:
            headers["Authorization"] = f"Bearer {tokens[req['auth']]}"
        if req["body"] is not None:
            headers["Content-Type"] = "application/json"
        r = client.request(req["method"], path, content=req["body"], headers=headers)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (req, r.status_code, r.text[:300])
        for name, value in HEADERS:
            assert r.headers.get(name.decode()) == value.decode(), (req, r.status_code, dict(r.headers))

    t0 = time.monotonic()
    one_request()
    took = time.monotonic() - t0
    store.close()
    print(f"fuzz: {sum(seen.values())} requests in {took:.1f} s, answers {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= EXAMPLES  # every example sent a request
    assert seen.get(200, 0) > 0 and seen.get(422, 0) > 0  # both accepted and refused requests were drawn
