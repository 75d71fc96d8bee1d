from __future__ import annotations

from broker.gpus import Gpu, parse


def test_nvidia_smi_output_is_parsed():
    output = "0, NVIDIA H100 80GB HBM3, 81559 MiB\n1, NVIDIA A100-SXM4-40GB, 40960 MiB\n"
    assert parse(output) == [Gpu("0", "NVIDIA H100 80GB HBM3", "81559 MiB"),
                             Gpu("1", "NVIDIA A100-SXM4-40GB", "40960 MiB")]
    assert parse("No devices were found\n") == []
