"""tools/analysis_tools/attention_benchmark.py times both bias forms of every stage, and their
outputs agree."""
import pytest
from tool_modules import load_tool


@pytest.fixture
def attention_benchmark(capsys):
    tool = load_tool('tools/analysis_tools/attention_benchmark.py')

    def run(*args):
        tool.main(['--device', 'cpu', '--warmup', '0', '--repeats', '1', '--min-repeat-time',
                   '0', *map(str, args)])
        return capsys.readouterr().out

    return run


def test_every_stage_with_both_bias_forms_and_each_query_split(attention_benchmark):
    out = attention_benchmark('--arch', 'ti', '--size', 320, 224, '--batch', 1, '--dtype',
                              'float32', '--groups', 1, 2, 'auto')
    assert out.startswith('CMT-TI attention at 320x224, batch 1, float32, cpu')
    rows = [line.strip('|').split('|') for line in out.splitlines()[3:]]
    cells = [[cell.strip() for cell in row] for row in rows]
    # stage 1 at 320x224: 80x56 queries, 10x7 keys (Ti learns a 5x5 key grid)
    assert cells[0][:4] == ['1', '4,480', '70', '1']
    assert [(row[0], row[4], row[5]) for row in cells] == [
        (str(stage), form, groups) for stage in range(1, 5) for form in ('dense', 'low-rank')
        for groups in ('1', '2', '1 (auto)')]  # on a CPU auto is 1
    for row in cells:
        forward, forward_backward, difference = map(float, row[6:])
        assert forward > 0 and forward_backward > 0
        assert difference < 1e-4


def test_bad_arch_and_size_are_clear_errors(attention_benchmark):
    with pytest.raises(SystemExit, match="unknown CMT arch 'l'"):
        attention_benchmark('--arch', 'l')
    with pytest.raises(SystemExit, match='16x16 is too small for CMT'):
        attention_benchmark('--size', 16, 16)
