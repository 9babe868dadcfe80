"""chat-bench HOST PORT: load a chat relay open-loop and measure what arrives.

    chat-bench 127.0.0.1 8081 -n 100 -s 10 -r 2000 -d 10
    chat-bench 192.168.1.20 8081 --sweep --plot sweep.png --json sweep.json
    chat-bench 127.0.0.1 8081 --idle 20000
    chat-bench 127.0.0.1 8081 -n 10000 -s 2 -r 20 -d 5 -c 400 --after-join 2
    chat-bench --discover

Exit status: 0 when the run held (nothing lost, duplicated, reordered or
corrupt, every connection made; a sweep: some step sustained), 1 when it did
not (the figures and --json are still written), 2 when it could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rich.console import Console

from benchmarks import histo, plot, proctree, report, sweep
from benchmarks.dialects import DIALECTS
from benchmarks.idle import run_idle
from benchmarks.runner import RunConfig, RunError, run_once

# A run that found loss, reordering or failed connections exits non-zero, so a
# script (or CI) that uses chat-bench as a check need not parse its output.
FAULT_EXIT = 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="chat-bench", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("host", nargs="?")
    ap.add_argument("port", nargs="?", type=int)
    ap.add_argument("--discover", action="store_true",
                    help="list the relays advertised on the LAN (mDNS, 2 s) and exit")
    ap.add_argument("-n", "--receivers", type=int, default=100,
                    help="receiving connections (default 100)")
    ap.add_argument("-s", "--senders", type=int, default=10,
                    help="sending connections (default 10)")
    ap.add_argument("-r", "--rate", type=float, default=1000.0,
                    help="total messages/s offered, paced open loop (default 1000)")
    ap.add_argument("--size", type=int, default=100, help="message text bytes (default 100)")
    ap.add_argument("-d", "--duration", type=float, default=10.0,
                    help="measured seconds (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0,
                    help="seconds of load before measuring (default 2)")
    ap.add_argument("--after-join", type=float, metavar="SECONDS",
                    help="a join storm: send from right after the last welcome and time the "
                         "window from SECONDS after it, instead of --warmup after the first "
                         "send; the join phase is reported (e.g. -n 10000 -c 400 "
                         "--after-join 2)")
    ap.add_argument("--rooms", type=int, default=1,
                    help="rooms to spread connections over (default 1)")
    ap.add_argument("--dialect", choices=DIALECTS, default="native",
                    help="native msgpack frames, text lines, or IRC (default native)")
    ap.add_argument("--no-greeting", action="store_true",
                    help="text dialect without greeting or rooms (bare line relays, the seed)")
    ap.add_argument("-c", "--concurrency", type=int, default=200,
                    help="connections being opened at once (default 200)")
    ap.add_argument("-p", "--procs", type=int, default=os.cpu_count() or 1,
                    help="load processes (default: CPU count)")
    ap.add_argument("--drain", type=float, default=5.0,
                    help="seconds to wait for stragglers after the last send (default 5)")
    ap.add_argument("--json", metavar="FILE", help="write every figure here")
    ap.add_argument("--plot", metavar="FILE.png", help="plot the sweep (needs matplotlib)")
    ap.add_argument("--sweep", action="store_true", help="raise the rate to find capacity")
    ap.add_argument("--sweep-start", type=float, default=500.0,
                    help="msgs/s of the first step (default 500)")
    ap.add_argument("--sweep-factor", type=float, default=1.5,
                    help="rate multiplier from step to step (default 1.5)")
    ap.add_argument("--sweep-max", type=float, default=1_000_000.0,
                    help="highest msgs/s tried (default 1,000,000)")
    ap.add_argument("--sweep-steps", type=int, default=20,
                    help="most ladder steps (default 20)")
    ap.add_argument("--sweep-retries", type=int, default=1, metavar="K",
                    help="runs again of the first step that failed on p99 alone, before it "
                         "counts as failed (default 1; loss is never retried)")
    ap.add_argument("--sweep-refine", type=int, default=3, metavar="K",
                    help="after the first failing step, bisect K more steps between it and "
                         "the last sustained rate (default 3: x1.5 ladder known to 5%%)")
    ap.add_argument("--p99-limit", type=float, default=100.0,
                    help="ms; a sweep step with a higher p99 is not sustained (default 100)")
    ap.add_argument("--idle", type=int, metavar="N", help="hold N idle connections instead")
    ap.add_argument("--idle-hold", type=float, default=3.0, help="seconds to hold them (default 3)")
    ap.add_argument("--engine", choices=("auto", "c", "python"), default="auto",
                    help="who sends and checks during the timed phase: the C engine "
                         "(built with cc on first use; 2-14x less CPU per message, more "
                         "the larger the relay's batches), Python, or C when it builds "
                         "(default)")
    ap.add_argument("--server-pid", "--relay-pid", dest="server_pid", type=int,
                    action="append", metavar="PID",
                    help="the server's process, weighed with all its children for CPU per "
                         "delivery and RSS; repeat for a hub of its own (default: whoever "
                         "listens on PORT, when HOST is this machine)")
    return ap


def find_server(args: argparse.Namespace) -> tuple[tuple[int, ...], str | None]:
    """The server's root PIDs, or () and why its CPU cannot be weighed.

    Raises:
        RunError: a --server-pid that is no process on this host.
    """
    if args.server_pid:
        gone = [pid for pid in args.server_pid if not proctree.tree([pid])]
        if gone:
            raise RunError(f"--server-pid {gone[0]}: no such process on this host")
        return tuple(args.server_pid), None
    if not proctree.is_local(args.host):
        return (), (f"{args.host} is not this machine, so its processes cannot be weighed; "
                    "run chat-bench on the server's host, or pass --server-pid there")
    roots = proctree.server_roots(args.port)
    if not roots:
        return (), (f"no process visible here listens on port {args.port} "
                    "(another user's?); pass --server-pid")
    return tuple(roots), None


def config_from(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        host=args.host, port=args.port, dialect=args.dialect, receivers=args.receivers,
        senders=args.senders, rate=args.rate, size=args.size, duration=args.duration,
        warmup=args.warmup, rooms=args.rooms, concurrency=args.concurrency, procs=args.procs,
        greeting=not args.no_greeting, drain=args.drain, engine=args.engine,
        after_join=args.after_join,
    )


def run_sweep(cfg: RunConfig, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Climb the ladder to one step past the first failure, then bisect the bracket."""
    rates = sweep.ladder(args.sweep_start, args.sweep_factor, args.sweep_max, args.sweep_steps)

    def run(rate: float) -> dict[str, Any]:
        cfg.rate = rate
        with report.Progress(console, cfg.receivers) as prog:
            return run_once(cfg, prog.update)

    def told(rate: float, result: dict[str, Any], ok: bool, retrying: bool) -> None:
        verdict = "ok  " if ok else "FAIL"
        console.print(f"{verdict} {rate:>10,.0f} msgs/s  {result['deliveries_per_s']:>12,.0f} "
                      f"deliveries/s  lost {result['lost']:,}  "
                      f"cut {result.get('cut_receivers', 0):,}  shed {result.get('shed', 0):,}  "
                      f"p99 {result['latency_ms']['p99']:.2f} ms  "
                      f"gen CPU {max(result['generator']['busy']):.0%}"
                      + report.server_cpu_note(result)
                      + ("  (only p99 failed: once more)" if retrying else ""))

    steps, retried = sweep.climb(run, rates, args.sweep_refine, args.p99_limit, extra=1,
                                 retries=args.sweep_retries, report=told)
    best = sweep.highest_sustained(steps, args.p99_limit)
    # Every step held: the ladder ended (--sweep-max or --sweep-steps), not the relay.
    capped = bool(steps) and all(sweep.step_ok(s, args.p99_limit) for s in steps)
    return {"steps": steps, "retried": retried, "best": best, "p99_limit_ms": args.p99_limit,
            "capped": capped}


def latency_plot(res: dict[str, Any], args: argparse.Namespace, console: Console) -> None:
    """One run's latency against percentile, with the generator's send lag beside it."""
    if not plot.available():
        console.print("[yellow]--plot needs matplotlib: pip install 'chat-relay[plot]'[/yellow]")
        return
    curves = {"end to end": histo.curve_ms(histo.decode(res["latency_hist"]),
                                           plot.CURVE_PERCENTILES)}
    lag = res["generator"].get("send_lag_hist")
    if lag:
        curves["the generator's send lag"] = histo.curve_ms(histo.decode(lag),
                                                            plot.CURVE_PERCENTILES)
    plot.percentiles_png(curves, args.plot,
                         f"chat-bench {args.host}:{args.port}: {res['offered_rate']:,.0f} "
                         f"msgs/s, N={args.receivers}, {args.dialect}")
    console.print(f"plot written to {args.plot}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.discover:
        from clients.discover import print_discovered

        try:
            return print_discovered("chat-bench")
        except KeyboardInterrupt:
            return 130
    if args.host is None or args.port is None:
        parser.error("give HOST and PORT (--discover lists the relays on the LAN)")
    console = Console(stderr=False)
    cfg = config_from(args)
    out: dict[str, Any] = {"environment": report.environment(), "argv": sys.argv[1:]}
    held = True  # whether the run found what a user scripting chat-bench checks for
    try:
        cfg.server_pids, why = find_server(args)
        weighs = "relay RSS" if args.idle else "server CPU per delivery"
        out["server_not_weighed"] = why
        if why:
            console.print(f"{weighs}: - ({why})")
        else:
            console.print(f"{weighs}: process tree(s) of PID "
                          f"{', '.join(map(str, cfg.server_pids))}")
        if args.idle:
            res = run_idle(cfg, args.idle, args.idle_hold, list(cfg.server_pids))
            con = res["connect"]
            console.print(f"{con['connected']:,} idle connections ({con['failed']:,} failed) "
                          f"in {con['seconds']:.2f} s: {con['rate_per_s']:,.0f} connections/s")
            for why, n in list(con.get("failure_reasons", {}).items())[:5]:
                console.print(f"  {n:,} failed: {why}")
            if res["rss_per_connection"] is not None:
                console.print(f"relay RSS {res['relay_rss_before'] / 2**20:,.1f} -> "
                              f"{res['relay_rss_after'] / 2**20:,.1f} MiB: "
                              f"{res['rss_per_connection'] / 1024:,.1f} KiB per connection")
            if res.get("release_s") is not None:
                console.print(f"all dropped at once: relay back to its idle threads "
                              f"in {res['release_s']:.2f} s")
            elif res["relay_pids"]:
                console.print("[red]relay still had client threads 120 s after the drop[/red]")
            for w in res["warnings"]:
                console.print(f"[bold red]warning:[/bold red] {w}")
            out["idle"] = res
            held = con["failed"] == 0
            if args.plot:
                console.print("[yellow]--plot draws a run's latency or a sweep; "
                              "--idle has nothing to plot[/yellow]")
        elif args.sweep:
            res = run_sweep(cfg, args, console)
            best = res["best"]
            if best is None:
                console.print("[red]no step was sustained[/red]")
            else:
                console.print(f"highest sustained: {best['offered_rate']:,.0f} msgs/s = "
                              f"{best['deliveries_per_s']:,.0f} deliveries/s "
                              f"(p99 {best['latency_ms']['p99']:.2f} ms, "
                              f"limit {args.p99_limit:.0f} ms)")
                if res["capped"]:
                    console.print("[yellow]every step held: the relay's capacity is higher "
                                  "than the sweep went; raise --sweep-max or --sweep-steps"
                                  "[/yellow]")
                report.print_result(console, best)
            out["sweep"] = res
            held = best is not None
            if args.plot:
                if plot.available():
                    plot.sweep_png({f"{cfg.dialect} N={cfg.receivers}": res["steps"]},
                                   args.plot, f"chat-bench sweep {args.host}:{args.port}")
                    console.print(f"plot written to {args.plot}")
                else:
                    console.print("[yellow]--plot needs matplotlib: "
                                  "pip install 'chat-relay[plot]'[/yellow]")
        else:
            with report.Progress(console, cfg.receivers) as prog:
                res = run_once(cfg, prog.update)
            report.print_result(console, res)
            out["run"] = res
            held = bool(res["ok"])
            if args.plot:
                latency_plot(res, args, console)
    except (RunError, OSError) as exc:
        console.print(f"[bold red]chat-bench: {exc}[/bold red]")
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    if args.json:
        report.write_json(args.json, out)
        console.print(f"figures written to {args.json}")
    return 0 if held else FAULT_EXIT


if __name__ == "__main__":
    sys.exit(main())
