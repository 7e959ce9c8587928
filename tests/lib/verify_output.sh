# Reading `qaforge verify`'s terminal output in the shell tests; sourced, defines functions only.

# ran_in OUTPUT: the engine the report says it ran in and its verdict, e.g.
# "onnxruntime (1.32.0, …): PASS" or "tract 0.23.9: PASS".
ran_in() {
  echo "$(grep -oE '\((onnxruntime \([^)]*\)|tract [^ ]*)' <<<"$1" | head -1 | cut -c2-): $(grep -oE 'PASS|FAIL|NOT VERIFIED' <<<"$1" | tail -1)"
}

# auto_ran_in ENGINE OUTPUT: succeeds when `verify --engine auto` ran in ENGINE: `onnxruntime`, or
# `tract` because ONNX Runtime would not be exact on this CPU (the report says so).
auto_ran_in() {
  case $1 in
    onnxruntime) grep -qF -- "(onnxruntime (" <<<"$2" ;;
    tract) grep -q -- "(tract [^ ]* (--engine auto: ONNX Runtime would not be exact here" <<<"$2" ;;
    *) echo "auto_ran_in: unknown engine $1" >&2; return 2 ;;
  esac
}
