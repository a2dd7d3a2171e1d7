"""Pure domain code, called directly: quantities, validation, back-off, PSI, logs, events, store."""

from __future__ import annotations

from serverlessos_agent.stats import cpu_times, parse_meminfo, parse_pressure


def test_psi_and_meminfo_parsing() -> None:
    p = parse_pressure(
        "some avg10=1.50 avg60=0.75 avg300=0.10 total=123456\n"
        "full avg10=0.20 avg60=0.05 avg300=0.00 total=789\n"
    )
    assert (p.some_avg10, p.some_avg60, p.full_avg10, p.full_avg60) == (1.5, 0.75, 0.2, 0.05)
    assert (p.some_total_us, p.full_total_us) == (123456, 789)
    cpu_only = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n")
    assert cpu_only.full_total_us == 0
    info = parse_meminfo("MemTotal:       16384 kB\nMemAvailable:    8192 kB\nHugePages_Total: 0\n")
    assert info == {"MemTotal": 16384 * 1024, "MemAvailable": 8192 * 1024, "HugePages_Total": 0}
    busy, total = cpu_times()
    assert 0 <= busy <= total
