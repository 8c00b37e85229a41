"""A tiny JSON-over-HTTP client for tests of the HTTP output (not a test module)."""
import http.client
import json


def request_json(out, path, method="GET", timeout=5, headers=None):
    """(status, decoded JSON body) of ``method path`` on the HTTP output ``out`` (its .port)."""
    conn = http.client.HTTPConnection("127.0.0.1", out.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def get_json(out, path):
    return request_json(out, path)[1]


def post(out, path, token=True):
    """POST as the page does: with the run's token in X-Tir-Token (``token=False``: without)."""
    return request_json(out, path, "POST", headers={"X-Tir-Token": out.token} if token else {})
