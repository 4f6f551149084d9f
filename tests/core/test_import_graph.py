"""The import graph, read from the code (bench/import_graph.py): no circle, no app importing aicp, and
the directions of DESIGN §7."""

from __future__ import annotations

from bench.import_graph import APPS, app_graph, app_of, cycles, edges, module_graph

EDGES = edges()


def test_it_finds_the_imports_it_checks():
    assert ("tasks.services.submission", "ledger.services") in {(e.source, e.target) for e in EDGES}


def test_it_has_no_circle_among_app_modules_at_import_time():
    assert cycles(module_graph(EDGES, with_deferred=False)) == []


def test_it_has_no_circle_hidden_in_a_function_level_import():
    assert cycles(module_graph(EDGES, with_deferred=True)) == []


def test_it_has_no_app_importing_aicp():
    assert [e for e in EDGES if app_of(e.source) in APPS and app_of(e.target) == "aicp"] == []


def test_it_has_no_circle_between_apps():
    assert cycles(app_graph(EDGES)) == []


def test_it_keeps_the_directions_of_the_design():
    graph = app_graph(EDGES)
    for app in ("users", "ledger", "agents", "duke"):
        assert "tasks" not in graph.get(app, set()), app
    assert graph.get("core", set()) == set()  # core imports no app
    assert "users" not in graph.get("ledger", set())  # users build on the ledger, not back
    assert "simulator" not in {target for app in APPS for target in graph.get(app, set())}
