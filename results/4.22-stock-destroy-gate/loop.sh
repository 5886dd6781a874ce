#!/bin/sh
# Runs test_destroying_a_running_guest_while_others_pause_it N times in a
# stock boot's dom0 (stock's toolstack: libxl forks a destroyer child). Run
# from a checkout with its .venv installed (make install):
#   python -m pyxen.lab run --variant stock --bind "$PWD" --timeout 1800 \
#       -- sh "$PWD/results/4.22-stock-destroy-gate/loop.sh" "$PWD"
# The test fails when pyxen found a destroyer child deadlocked on a lock it
# inherited at fork() (pyxen.libxl.deadlocked_children()); the destroy itself
# still succeeds when a retry does.
repo=${1:?the checkout, as bound into dom0}
export PYXEN_TINYGUEST="$repo/.venv/lib/python3.11/site-packages/pyxen/guest/tinyguest"
cd /tmp || exit 2
i=0
while [ $i -lt "${N:-15}" ]; do
  i=$((i+1))
  "$repo/.venv/bin/python" -P -m pytest "$repo/tests/xen/test_build_domctls.py" --xen host \
      -p no:cacheprovider -p no:hypothesispytest --rootdir "$repo" -c "$repo/pyproject.toml" \
      -q -rfE -k destroying_a_running 2>&1 | grep -E "passed|failed|AssertionError|attempt" | tail -4
done
