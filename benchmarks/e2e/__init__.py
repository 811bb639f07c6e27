"""The parts of ``python -m benchmarks.bench_e2e`` (the entry point, rounds and aggregation,
stays in ``benchmarks/bench_e2e.py``), by job:

* :mod:`.common`: topology addresses, worlds, metrics, goals;
* :mod:`.world`: one world (kernel vxlan, vxdp or its Python path) built in a lab, and the packet
  counters along its path;
* :mod:`.traffic`: iperf3, ping and the CPU accounting around them;
* :mod:`.profile`: py-spy and perf on the VTEPs, and their summaries;
* :mod:`.render`: the generated sections of ``RESULTS_e2e.md`` / ``RESULTS.md``, the plot and
  the text table.
"""
