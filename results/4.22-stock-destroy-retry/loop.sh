#!/bin/sh
# Runs tests/xen/test_build_domctls.py (but its slowest test) N times in the
# lab's dom0; on the first failure dumps Xen's and dom0's state. Run from a
# checkout with its .venv installed (make install):
#   python -m pyxen.lab run --variant stock --bind "$PWD" --files OUT \
#       -- env N=40 PYXEN_VARIANT=stock sh "$PWD/results/4.22-stock-destroy-retry/loop.sh" "$PWD"
repo=${1:?the checkout, as bound into dom0}
out=${PYXEN_OUT:-/tmp/loop}; mkdir -p "$out"
cd "$repo" || exit 2
i=0
while [ $i -lt "${N:-40}" ]; do
  i=$((i+1))
  timeout 90 .venv/bin/python -P -m pytest tests/xen/test_build_domctls.py -k "${K:-not small_destroy}" \
      --xen host -p no:cacheprovider -p no:hypothesispytest --rootdir "$repo" -c "$repo/pyproject.toml" \
      -vv -x -o log_cli=true -o log_cli_level=WARNING -o faulthandler_timeout=60 > "$out/run$i.txt" 2>&1
  rc=$?
  echo "iter $i rc=$rc $(tail -1 "$out/run$i.txt")"
  if [ $rc -ne 0 ]; then
    xl list > "$out/xl-list.txt" 2>&1
    xl debug-keys q; xl debug-keys d; xl debug-keys r
    xl dmesg > "$out/dmesg.txt" 2>&1; dmesg > "$out/linux-dmesg.txt" 2>&1
    ps -eo pid,stat,wchan:30,cmd > "$out/ps.txt"
    break
  fi
done
echo done
