"""One module per verb the user runs: fit (and its auto ladder), compare, rank, distill, adapt."""
