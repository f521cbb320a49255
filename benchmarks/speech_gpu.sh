#!/usr/bin/env bash
# The speech recogniser trained on a lent GPU machine in one uninterrupted schedule longer than one command may
# run (docs/recognize.md, "On a GPU"). The device machine has PyTorch but neither espeak-ng nor the audio wheels,
# runs one command for at most 10 minutes, and keeps a process started under setsid alive only while the machine
# stays warm (about 30 s between commands). So:
#
#   here:   benchmarks/speech_gpu.sh prepare            # wheels + espeak-ng (binary, libraries, English data) into .gpu/
#   there:  benchmarks/speech_gpu.sh start 50000 17.5   # build the dataset, start training under setsid, watch
#                                                        # (DATA_FLAGS="--random-accents 0.5" before it: extra
#                                                        # flags for the dataset; extra training flags go after 17.5)
#   there:  benchmarks/speech_gpu.sh watch               # again at once, each time: watch ~9.5 minutes, then
#                                                        # copy the best weights so far to $OUT (split in 15 MB parts)
#   here:   benchmarks/speech_gpu.sh join FILES_AT RUN   # rebuild RUN/best.safetensors + config.json from the parts
#
# Each device call names `.gpu` in carry and starts with `bash benchmarks/speech_gpu.sh ...`. Whatever happens
# between calls, the best weights of the last call came back, and `rnnkit recognize train --init-from` goes on
# from them. Scoring runs here, on the CPU: `rnnkit recognize eval RUN --data DIR ...` reads the same test files
# (the builder draws them per index, whatever --train says); meanwhile a character LM trains here for the beam
# search (`rnnkit data lm-text`, `rnnkit train`, then `eval --beam 25 --lm LM_RUN --lm-end`, tuned on --split val).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu
DATA=/tmp/speech-data
RUN=/tmp/speech-run
PY=${PY:-python3} DEVICE=${DEVICE:-cuda}  # PY=.venv/bin/python DEVICE=cpu: a small rehearsal on this machine

setup() {  # on the device machine: the carried wheels and espeak-ng on the paths
  "$PY" -c "import librosa, soundfile, jiwer" 2>/dev/null || "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$GPU"/wheels/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH} PATH=$PWD/$GPU/espeak/bin:$PATH PYTHONUNBUFFERED=1
  "$PY" -c "import librosa.filters, soundfile, soxr, jiwer, rnnkit.data.speech" ||  # fail now, not 10 minutes on
    { echo "error: the audio packages do not import there — see above; carry the missing wheels in $GPU/wheels" >&2; exit 2; }
}

collect() {  # the best weights so far, config and metrics -> $OUT (files come back at 16 MiB each at most)
  local src=$RUN/best.safetensors
  [ -f "$src" ] || src=$RUN/model.safetensors
  [ -f "$src" ] || { echo "no weights yet"; return 0; }
  cp "$src" /tmp/best.copy  # training may replace the file between two reads: split and hash one copy
  cp "$RUN/config.json" "$OUT/"
  cp "$RUN/metrics.csv" "$OUT/" 2>/dev/null || true
  split -b 15000000 -d /tmp/best.copy "$OUT/best.part"
  sha256sum /tmp/best.copy | cut -d' ' -f1 > "$OUT/best.sha256"
}

watch_for() {  # watch the training log for $1 seconds or until training ends, then collect
  local until=$((SECONDS + $1))
  while [ $SECONDS -lt $until ] && kill -0 "$(cat /tmp/train.pid)" 2>/dev/null; do
    sleep 20
    tail -n 1 $RUN/metrics.csv 2>/dev/null || true
  done
  tr '\r' '\n' < /tmp/train.log | grep -a -E "^(done|error|stopped)" || true
  collect
}

case "${1:-}" in
  prepare)
    mkdir -p $GPU/wheels $GPU/espeak/bin $GPU/espeak/lib
    mkdir -p "$(git rev-parse --git-path info)"
    grep -qx "/$GPU/" "$(git rev-parse --git-path info/exclude)" 2>/dev/null || echo "/$GPU/" >> "$(git rev-parse --git-path info/exclude)"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d $GPU/wheels librosa==0.11.0 soundfile==0.14.0 soxr==1.1.0 audioread==3.1.0 \
      decorator==5.3.1 pooch==1.9.0 platformdirs==4.14.8 jiwer==4.0.0 rapidfuzz==3.14.6 cffi==2.1.1 pycparser==3.12
    cp "${RNNKIT_TEST_DATA:-../shared/data}/spa-eng/spa.txt" $GPU/spa.txt  # ../shared does not travel
    exe=$(command -v espeak-ng) || { echo "error: install espeak-ng here first (apt-get install espeak-ng)" >&2; exit 2; }
    cp "$exe" $GPU/espeak/bin/espeak-ng.bin
    # every library it loads but the C library itself
    ldd "$exe" | awk '/=> \// {print $3}' | grep -v -E '/(libc|libm|libpthread|libdl|librt)\.so' |
      xargs -I{} cp -L {} $GPU/espeak/lib/
    data=$(dirname "$(readlink -f "$(ldconfig -p | awk '/libespeak-ng.so.1 / {print $NF; exit}')")")/espeak-ng-data
    rm -rf $GPU/espeak/espeak-ng-data && mkdir -p $GPU/espeak/espeak-ng-data
    (cd "$data" && cp -r phondata phonindex phontab intonations en_dict lang voices $OLDPWD/$GPU/espeak/espeak-ng-data/)
    cat > $GPU/espeak/bin/espeak-ng <<'EOF'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")/..
LD_LIBRARY_PATH=$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ESPEAK_DATA_PATH=$here exec "$here/bin/espeak-ng.bin" "$@"
EOF
    chmod +x $GPU/espeak/bin/espeak-ng
    $GPU/espeak/bin/espeak-ng --version
    du -sh $GPU
    ;;
  start)  # start TRAIN_UTTERANCES MINUTES [extra training flags]
    n=${2:-50000} minutes=${3:-17.5}
    shift $(($# < 3 ? $# : 3))
    : "${OUT:?set OUT, the folder whose files come back (the device tool sets it)}"
    if [ -e $RUN ]; then echo "error: $RUN exists: training started on this machine already — use watch" >&2; exit 2; fi
    setup
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    espeak-ng --version
    t0=$SECONDS
    # shellcheck disable=SC2086  # DATA_FLAGS="--random-accents 0.5": extra dataset flags, split on spaces
    "$PY" -m rnnkit data speech $DATA --text $GPU/spa.txt --train "$n" --workers "$(nproc)" --quiet ${DATA_FLAGS:-}
    echo "dataset: $((SECONDS - t0)) s"
    setsid nohup "$PY" -m rnnkit recognize train --data $DATA --out $RUN --device "$DEVICE" --minutes "$minutes" \
      --hidden-size 320 --num-layers 3 --time-stride 4 --batch-size 64 --lr 2e-3 --warmup-steps 200 \
      --eval-interval 500 --freq-masks 2 --time-masks 2 "$@" > /tmp/train.log 2>&1 < /dev/null &
    echo $! > /tmp/train.pid
    sleep 5
    watch_for $((560 - SECONDS))
    ;;
  watch)
    : "${OUT:?set OUT, the folder whose files come back (the device tool sets it)}"
    setup
    watch_for "${2:-560}"
    ;;
  join)  # join FILES_AT RUN: the parts that came back -> RUN/best.safetensors, checked against the sha256
    from=$2 run=$3
    mkdir -p "$run"
    cat "$from"/best.part* > "$run/best.safetensors"
    echo "$(cat "$from/best.sha256")  $run/best.safetensors" | sha256sum -c -
    cp "$from/config.json" "$run/"
    [ ! -f "$from/metrics.csv" ] || cp "$from/metrics.csv" "$run/"
    ;;
  *)
    awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"
    exit 2
    ;;
esac
