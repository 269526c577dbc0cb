"""Golden timelines, computed by hand, one or more per rule of SPEC §2.

Each test states the scenario, works out the schedule in a comment, and asserts every
attempt's (step, target, attempt, start, end, outcome) exactly.
"""

from __future__ import annotations

from tests.helpers import runs, sim, steps

TWO_WEB = """
        targets:
          - {name: web-01, roles: [web]}
          - {name: web-02, roles: [web]}
"""


# --- executions ----------------------------------------------------------------------


def test_a_step_fans_out_to_matching_targets_in_declaration_order_and_a_server_step_runs_once():
    # web-02 is declared first, so it is visited first; db-01 has no web role.
    # deploy: 2 executions 0-4 (window 10). notify: server step, after deploy, 4-5.
    out = sim("""
        targets:
          - {name: web-02, roles: [web]}
          - {name: db-01, roles: [db]}
          - {name: web-01, roles: [web, edge]}
        steps:
          - {name: deploy, roles: [web, edge], duration: 4}
          - {name: notify, duration: 1}
    """)
    assert runs(out.report) == [
        ("deploy", "web-02", 1, 0, 4, "succeeded"),
        ("deploy", "web-01", 1, 0, 4, "succeeded"),
        ("notify", None, 1, 4, 5, "succeeded"),
    ]
    assert out.makespan == 5


def test_a_step_whose_roles_match_nothing_starts_and_succeeds_at_once():
    # ghost matches no target: active and succeeded at 3 (when its prerequisite ends),
    # taking no time; after starts at 3 too.
    out = sim(TWO_WEB + """
        steps:
          - {name: first, roles: [web], duration: 3}
          - {name: ghost, roles: [nobody], duration: 100}
          - {name: after, roles: [web], duration: 2}
    """)
    assert steps(out.report) == {
        "first": ("succeeded", 0, 3),
        "ghost": ("succeeded", 3, 3),
        "after": ("succeeded", 3, 5),
    }
    assert out.makespan == 5


# --- prerequisites -------------------------------------------------------------------


def test_after_previous_is_a_barrier_and_with_previous_joins_the_block():
    # Block 1 = {a (4s), b (2s, with-previous)}; c is after-previous: it waits for both.
    # Server steps, so no locks: a 0-4, b 0-2, c 4-5, d (with-previous of c) 4-7.
    # e after-previous waits for c and d: 7-8.
    out = sim("""
        steps:
          - {name: a, duration: 4}
          - {name: b, start: with-previous, duration: 2}
          - {name: c, duration: 1}
          - {name: d, start: with-previous, duration: 3}
          - {name: e, duration: 1}
    """)
    assert steps(out.report) == {
        "a": ("succeeded", 0, 4),
        "b": ("succeeded", 0, 2),
        "c": ("succeeded", 4, 5),
        "d": ("succeeded", 4, 7),
        "e": ("succeeded", 7, 8),
    }
    # Sequential: 4 + 2 + 1 + 3 + 1 = 11; savings 11 - 8 = 3.
    assert out.sequential_makespan == 11
    assert out.savings == 3


def test_depends_on_names_exactly_the_prerequisites():
    # slow 0-10; fast 0-2 (depends_on: [] -> ready at once); after-fast depends only on
    # fast: 2-5, overtaking the barrier that a plain after-previous step would see.
    # tail is after-previous: waits for all three: 10-11.
    out = sim("""
        steps:
          - {name: slow, duration: 10}
          - {name: fast, depends_on: [], duration: 2}
          - {name: after-fast, depends_on: [fast], duration: 3}
          - {name: tail, duration: 1}
    """)
    assert steps(out.report) == {
        "slow": ("succeeded", 0, 10),
        "fast": ("succeeded", 0, 2),
        "after-fast": ("succeeded", 2, 5),
        "tail": ("succeeded", 10, 11),
    }
    assert out.sequential_makespan == 16


def test_with_previous_copies_the_previous_steps_depends_on():
    # x 0-5, y 0-1; z depends_on [y]: 1-3; w is with-previous of z, so it also depends
    # only on y: 1-2 (not waiting for x).
    out = sim("""
        steps:
          - {name: x, duration: 5}
          - {name: y, depends_on: [], duration: 1}
          - {name: z, depends_on: [y], duration: 2}
          - {name: w, start: with-previous, duration: 1}
    """)
    assert steps(out.report)["w"] == ("succeeded", 1, 2)
    assert out.makespan == 5


# --- step slots ----------------------------------------------------------------------


def test_max_parallel_steps_activates_ready_steps_in_declaration_order():
    # Four independent 10 s server steps, 2 slots: s1, s2 at 0-10; s3, s4 at 10-20.
    out = sim("""
        policy: {max_parallel_steps: 2}
        steps:
          - {name: s1, duration: 10}
          - {name: s2, start: with-previous, duration: 10}
          - {name: s3, start: with-previous, duration: 10}
          - {name: s4, start: with-previous, duration: 10}
    """)
    assert [(s, st, e) for s, _, _, st, e, _ in runs(out.report)] == [
        ("s1", 0, 10), ("s2", 0, 10), ("s3", 10, 20), ("s4", 10, 20)
    ]


def test_an_active_step_holds_its_slot_while_its_executions_wait_for_locks():
    # 2 slots. A (web-01, 10 s) and B (web-01, 1 s, with-previous) are both active at 0;
    # B waits for the lock but holds the second slot, so C (server, 1 s, with-previous,
    # needing no lock at all) cannot be activated at 0. At 10 A ends and frees a slot:
    # C 10-11 beside B 10-11.
    out = sim("""
        policy: {max_parallel_steps: 2}
        targets: [{name: web-01, roles: [web]}]
        steps:
          - {name: A, roles: [web], duration: 10}
          - {name: B, start: with-previous, roles: [web], duration: 1}
          - {name: C, start: with-previous, duration: 1}
    """)
    assert steps(out.report) == {
        "A": ("succeeded", 0, 10),
        "B": ("succeeded", 0, 11),
        "C": ("succeeded", 10, 11),
    }


def test_skipped_steps_take_no_slot():
    # fail (1 s) fails at 1. With 1 slot: s-ok (condition success) is activated at 1 and
    # skipped (terminal at once), which frees nothing it held; then on-fail (failure
    # condition) is activated in the same pass and runs 1-3.
    out = sim("""
        policy: {max_parallel_steps: 1}
        steps:
          - {name: fail, duration: 1, fails: {server: 1}}
          - {name: s-ok, duration: 5}
          - {name: on-fail, start: with-previous, condition: failure, duration: 2}
    """)
    assert steps(out.report) == {
        "fail": ("failed", 0, 1),
        "s-ok": ("skipped", None, None),
        "on-fail": ("succeeded", 1, 3),
    }
    assert out.report.outcome == "failed"


# --- windows ---------------------------------------------------------------------------


FIVE = """
        targets:
          - {name: t1, roles: [app]}
          - {name: t2, roles: [app]}
          - {name: t3, roles: [app]}
          - {name: t4, roles: [app]}
          - {name: t5, roles: [app]}
"""


def test_a_steps_window_caps_its_running_executions():
    # Window 2, 10 s each: t1,t2 0-10; t3,t4 10-20; t5 20-30.
    out = sim(FIVE + """
        steps:
          - {name: roll, roles: [app], duration: 10, window: 2}
    """)
    assert [(t, s, e) for _, t, _, s, e, _ in runs(out.report)] == [
        ("t1", 0, 10), ("t2", 0, 10), ("t3", 10, 20), ("t4", 10, 20), ("t5", 20, 30)
    ]


def test_max_parallel_targets_is_the_default_window_and_a_step_window_wins():
    # Policy window 3: a runs t1-t3 at 0-4, t4-t5 at 4-8. b (window 1, after a):
    # one at a time, 2 s each: 8-10, 10-12, ... 16-18.
    out = sim(FIVE + """
        policy: {max_parallel_targets: 3}
        steps:
          - {name: a, roles: [app], duration: 4}
          - {name: b, roles: [app], duration: 2, window: 1}
    """)
    assert [(s, t, st) for s, t, _, st, _, _ in runs(out.report)] == [
        ("a", "t1", 0), ("a", "t2", 0), ("a", "t3", 0), ("a", "t4", 4), ("a", "t5", 4),
        ("b", "t1", 8), ("b", "t2", 10), ("b", "t3", 12), ("b", "t4", 14), ("b", "t5", 16),
    ]


def test_octopus_max_parallelism_sets_both_windows_and_an_explicit_policy_wins():
    # MaxParallelism 1 -> one step and one target at a time... except that
    # max_parallel_targets is set explicitly to 2: two steps of 2 targets, 5 s:
    # a: t1,t2 0-5; b (with-previous) waits for a step slot: 5-10. Makespan 10.
    out = sim("""
        variables: {Octopus.Action.MaxParallelism: "1"}
        policy: {max_parallel_targets: 2}
        targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}]
        steps:
          - {name: a, roles: [x], duration: 5}
          - {name: b, start: with-previous, duration: 5}
    """)
    assert steps(out.report) == {"a": ("succeeded", 0, 5), "b": ("succeeded", 5, 10)}


# --- locks -----------------------------------------------------------------------------


def test_seed_example_exclusive_lock_eats_the_parallelism():
    # A 10 s on both web targets; B with-previous 5 s. Exclusive: B blocked until 10,
    # then 10-15: makespan 15 = sequential 15.
    out = sim(TWO_WEB + """
        steps:
          - {name: A, roles: [web], duration: 10}
          - {name: B, start: with-previous, roles: [web], duration: 5}
    """)
    assert runs(out.report) == [
        ("A", "web-01", 1, 0, 10, "succeeded"),
        ("A", "web-02", 1, 0, 10, "succeeded"),
        ("B", "web-01", 1, 10, 15, "succeeded"),
        ("B", "web-02", 1, 10, 15, "succeeded"),
    ]
    assert (out.makespan, out.sequential_makespan, out.savings) == (15, 15, 0)


def test_seed_example_shared_via_the_octopus_bypass_variable_saves_five_seconds():
    # Shared: B 0-5 beside A 0-10: makespan 10, sequential 15, savings 5.
    out = sim(TWO_WEB + """
        variables: {OctopusBypassDeploymentMutex: "True"}
        steps:
          - {name: A, roles: [web], duration: 10}
          - {name: B, start: with-previous, roles: [web], duration: 5}
    """)
    assert [(s, t, st, e) for s, t, _, st, e, _ in runs(out.report)] == [
        ("A", "web-01", 0, 10), ("A", "web-02", 0, 10), ("B", "web-01", 0, 5), ("B", "web-02", 0, 5)
    ]
    assert (out.makespan, out.sequential_makespan, out.savings) == (10, 15, 5)


def test_a_waiting_writer_reserves_its_target_so_readers_cannot_overtake():
    # SPEC's example: r1 0-6 (shared); w blocked, reserves h1; r2 would fit beside r1
    # but h1 is reserved. w 6-8, r2 8-11. Makespan 11.
    out = sim("""
        targets: [{name: h1, roles: [h]}]
        steps:
          - {name: r1, roles: [h], duration: 6, isolation: shared}
          - {name: w, start: with-previous, roles: [h], duration: 2}
          - {name: r2, start: with-previous, roles: [h], duration: 3, isolation: shared}
    """)
    assert [(s, st, e) for s, _, _, st, e, _ in runs(out.report)] == [("r1", 0, 6), ("w", 6, 8), ("r2", 8, 11)]


def test_shared_executions_share_a_target_with_each_other():
    # Two shared steps on h1 run side by side: 0-4 and 0-3.
    out = sim("""
        policy: {target_isolation: shared}
        targets: [{name: h1, roles: [h]}]
        steps:
          - {name: a, roles: [h], duration: 4}
          - {name: b, start: with-previous, roles: [h], duration: 3}
    """)
    assert out.makespan == 4


def test_a_blocked_target_never_holds_back_the_steps_other_targets():
    # A holds t1 for 20 s. B (window 1) on t1, t2: B@t1 is blocked (reserves t1) but
    # the window still has room, so B@t2 starts at 0 (0-5). At 5 B@t1 is still blocked;
    # at 20 it runs 20-25.
    out = sim("""
        targets: [{name: t1, roles: [a, b]}, {name: t2, roles: [b]}]
        steps:
          - {name: A, roles: [a], duration: 20}
          - {name: B, start: with-previous, roles: [b], duration: 5, window: 1}
    """)
    assert [(s, t, st, e) for s, t, _, st, e, _ in runs(out.report)] == [
        ("A", "t1", 0, 20), ("B", "t2", 0, 5), ("B", "t1", 20, 25)
    ]


def test_server_steps_take_no_target_lock():
    # A holds both web targets for 10 s; a with-previous server step runs 0-3 anyway.
    out = sim(TWO_WEB + """
        steps:
          - {name: A, roles: [web], duration: 10}
          - {name: notify, start: with-previous, duration: 3}
    """)
    assert steps(out.report)["notify"] == ("succeeded", 0, 3)


def test_executions_are_visited_in_activation_order_not_declaration_order():
    # A (t1, 10 s), B (server 2 s) and D (t1, 3 s) are active at 0 in that order.
    # C depends on B: activated at 2, after D. At 10 t1 is free: D (earlier activation)
    # gets it 10-13, then C 13-16, although C is declared before D.
    out = sim("""
        targets: [{name: t1, roles: [x]}]
        steps:
          - {name: A, roles: [x], duration: 10}
          - {name: B, depends_on: [], duration: 2}
          - {name: C, depends_on: [B], roles: [x], duration: 3}
          - {name: D, depends_on: [], roles: [x], duration: 3}
    """)
    assert steps(out.report) == {
        "A": ("succeeded", 0, 10),
        "B": ("succeeded", 0, 2),
        "C": ("succeeded", 2, 16),
        "D": ("succeeded", 0, 13),
    }


# --- resources -------------------------------------------------------------------------


def test_resources_are_counted_semaphores():
    # db capacity 2; four 10 s server steps each use 1: two at 0-10, two at 10-20.
    out = sim("""
        resources: {db: 2}
        steps:
          - {name: m1, uses: {db: 1}, duration: 10}
          - {name: m2, start: with-previous, uses: {db: 1}, duration: 10}
          - {name: m3, start: with-previous, uses: {db: 1}, duration: 10}
          - {name: m4, start: with-previous, uses: {db: 1}, duration: 10}
    """)
    assert [(s, st, e) for s, _, _, st, e, _ in runs(out.report)] == [
        ("m1", 0, 10), ("m2", 0, 10), ("m3", 10, 20), ("m4", 10, 20)
    ]


def test_a_blocked_execution_reserves_its_resource_for_the_rest_of_the_pass():
    # db capacity 2. Y holds 1 unit 0-10. X needs 2: blocked at 0, reserves db. Z needs 1
    # and 1 is free, but db is reserved: Z waits. 10: X 10-15. 15: Z 15-18.
    out = sim("""
        resources: {db: 2}
        steps:
          - {name: Y, uses: {db: 1}, duration: 10}
          - {name: X, start: with-previous, uses: {db: 2}, duration: 5}
          - {name: Z, start: with-previous, uses: {db: 1}, duration: 3}
    """)
    assert [(s, st, e) for s, _, _, st, e, _ in runs(out.report)] == [("Y", 0, 10), ("X", 10, 15), ("Z", 15, 18)]


def test_a_full_window_passes_over_and_reserves_nothing():
    # S (window 1) on t1, t2, uses db 1 of 2. S@t1 runs 0-10; S@t2 is passed over (window
    # full), so it reserves neither t2 nor db: T (with-previous, t2, uses db 1) starts at 0.
    out = sim("""
        resources: {db: 2}
        targets: [{name: t1, roles: [s]}, {name: t2, roles: [s, t]}]
        steps:
          - {name: S, roles: [s], uses: {db: 1}, duration: 10, window: 1}
          - {name: T, start: with-previous, roles: [t], uses: {db: 1}, duration: 4}
    """)
    assert [(s, t, st, e) for s, t, _, st, e, _ in runs(out.report)] == [
        ("S", "t1", 0, 10), ("T", "t2", 0, 4), ("S", "t2", 10, 20)
    ]


# --- conditions and the error flag -------------------------------------------------------


def test_conditions_against_the_error_flag():
    # A fails at 5 (error flag set). B (success) skipped at 5; C (failure) runs 5-7 —
    # activated in the same pass, since B's skip made it ready; D (always) 7-8.
    out = sim("""
        steps:
          - {name: A, duration: 5, fails: {server: 1}}
          - {name: B, duration: 3}
          - {name: C, condition: failure, duration: 2}
          - {name: D, condition: always, duration: 1}
    """)
    assert steps(out.report) == {
        "A": ("failed", 0, 5),
        "B": ("skipped", None, None),
        "C": ("succeeded", 5, 7),
        "D": ("succeeded", 7, 8),
    }
    assert out.report.outcome == "failed"
    assert out.makespan == 8


def test_a_failure_step_is_skipped_when_nothing_failed():
    out = sim("""
        steps:
          - {name: A, duration: 5}
          - {name: rollback, condition: failure, duration: 30}
          - {name: D, condition: always, duration: 1}
    """)
    assert steps(out.report) == {
        "A": ("succeeded", 0, 5),
        "rollback": ("skipped", None, None),
        "D": ("succeeded", 5, 6),
    }
    assert out.report.outcome == "succeeded"


# --- failure, retries, timeouts ------------------------------------------------------------


def test_retries_wait_their_delay_and_a_later_success_clears_nothing():
    # 4 s attempts, first two fail, retry_delay 3: 0-4 fail, pending at 7, 7-11 fail,
    # pending at 14, 14-18 succeeds. Retried-then-succeeded: no error flag.
    out = sim("""
        targets: [{name: t1, roles: [x]}]
        steps:
          - {name: A, roles: [x], duration: 4, fails: {t1: 2}, retries: 2, retry_delay: 3}
    """)
    assert runs(out.report) == [
        ("A", "t1", 1, 0, 4, "failed"),
        ("A", "t1", 2, 7, 11, "failed"),
        ("A", "t1", 3, 14, 18, "succeeded"),
    ]
    assert out.report.outcome == "succeeded"


def test_a_retry_keeps_its_place_in_the_priority_order():
    # Window 1, 10 s: t1#1 0-10 fails; with delay 0 it is pending again at 10 and, being
    # first in target order, runs again 10-20 before t2 (20-30) and t3 (30-40).
    out = sim("""
        targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}, {name: t3, roles: [x]}]
        steps:
          - {name: S, roles: [x], duration: 10, window: 1, fails: {t1: 1}, retries: 1}
    """)
    assert [(t, a, st, e, o) for _, t, a, st, e, o in runs(out.report)] == [
        ("t1", 1, 0, 10, "failed"),
        ("t1", 2, 10, 20, "succeeded"),
        ("t2", 1, 20, 30, "succeeded"),
        ("t3", 1, 30, 40, "succeeded"),
    ]


def test_an_attempt_longer_than_its_timeout_fails_as_timed_out():
    # 10 s of work, timeout 4 s, one retry: 0-4 timed out, 4-8 timed out, step failed at 8.
    out = sim("""
        steps:
          - {name: A, duration: 10, timeout: 4s, retries: 1}
          - {name: B, condition: always, duration: 1}
    """)
    assert runs(out.report) == [
        ("A", None, 1, 0, 4, "timed_out"),
        ("A", None, 2, 4, 8, "timed_out"),
        ("B", None, 1, 8, 9, "succeeded"),
    ]
    assert steps(out.report)["A"] == ("failed", 0, 8)
    assert out.report.outcome == "failed"


def test_an_attempt_exactly_as_long_as_its_timeout_succeeds():
    out = sim("""
        steps:
          - {name: A, duration: 4, timeout: 4}
    """)
    assert runs(out.report) == [("A", None, 1, 0, 4, "succeeded")]


def test_a_failed_execution_stops_its_step_which_fails_when_its_running_ones_end():
    # Window 2. t1 (2 s) fails at 2: the step starts nothing more, so t3 never runs;
    # t2 (5 s) is running and ends at 5; the step fails at 5.
    out = sim("""
        targets: [{name: t1, roles: [x]}, {name: t2, roles: [x]}, {name: t3, roles: [x]}]
        steps:
          - {name: S, roles: [x], duration: {t1: 2, default: 5}, window: 2, fails: {t1: 1}}
    """)
    assert runs(out.report) == [("S", "t1", 1, 0, 2, "failed"), ("S", "t2", 1, 0, 5, "succeeded")]
    assert steps(out.report)["S"] == ("failed", 0, 5)


FAIL_BESIDE = """
targets: [{name: t1, roles: [a]}, {name: t2, roles: [b]}, {name: t3, roles: [b]}]
steps:
  - {name: A, roles: [a], duration: 2, fails: {t1: 1}}
  - {name: B, start: with-previous, roles: [b], duration: 5, window: 1}
  - {name: C, duration: 1}
  - {name: D, condition: always, duration: 1}
"""


def test_without_fail_fast_other_active_steps_go_on():
    # A fails at 2. B goes on: t2 0-5, t3 5-10, succeeded. C skipped at 10; D 10-11.
    out = sim(FAIL_BESIDE)
    assert steps(out.report) == {
        "A": ("failed", 0, 2),
        "B": ("succeeded", 0, 10),
        "C": ("skipped", None, None),
        "D": ("succeeded", 10, 11),
    }


def test_fail_fast_stops_every_active_step_and_later_steps_run_normally():
    # A fails at 2 with fail_fast: B (active) starts nothing more; t2 runs out its 0-5,
    # t3 never starts, so B ends cancelled at 5. C skipped at 5; D (always) 5-6.
    out = sim(FAIL_BESIDE, "fail_fast=true")
    assert runs(out.report) == [
        ("A", "t1", 1, 0, 2, "failed"),
        ("B", "t2", 1, 0, 5, "succeeded"),
        ("D", None, 1, 5, 6, "succeeded"),
    ]
    assert steps(out.report) == {
        "A": ("failed", 0, 2),
        "B": ("cancelled", 0, 5),
        "C": ("skipped", None, None),
        "D": ("succeeded", 5, 6),
    }
    assert out.report.outcome == "failed"


# --- simultaneous events -----------------------------------------------------------------


def test_simultaneous_completions_are_applied_in_start_order_before_one_pass():
    # Seed example, exclusive. At 10 both A executions end: both execution.finished and
    # A's step.finished come before B's two execution.started (one pass, after both).
    from engine.events import ExecutionFinished, ExecutionStarted, StepFinished

    events = []
    from simulator.sim import simulate
    from tests.helpers import plan_of

    simulate(plan_of(TWO_WEB + """
        steps:
          - {name: A, roles: [web], duration: 10}
          - {name: B, start: with-previous, roles: [web], duration: 5}
    """), sink=events.extend)
    at_ten = [(type(e).__name__, getattr(e, "step", None), getattr(e, "target", None)) for e in events if e.at == 10]
    assert at_ten == [
        ("ExecutionFinished", "A", "web-01"),
        ("ExecutionFinished", "A", "web-02"),
        ("StepFinished", "A", None),
        ("ExecutionStarted", "B", "web-01"),
        ("ExecutionStarted", "B", "web-02"),
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert {ExecutionFinished, ExecutionStarted, StepFinished} <= {type(e) for e in events}


def test_float_noise_does_not_split_an_instant():
    # 0.1 + 0.2 and 0.3 end at the same instant (times are rounded to 1e-9 s).
    out = sim("""
        steps:
          - {name: a, duration: 0.1}
          - {name: b, duration: 0.2}
          - {name: c, depends_on: [], duration: 0.3}
          - {name: d, duration: 1}
    """)
    assert steps(out.report)["d"] == ("succeeded", 0.3, 1.3)
