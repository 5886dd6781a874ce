#!/bin/sh
# one.sh VARIANT TAG [extra lab args]: a boot of VARIANT running storm.py, watched
# (STORM_ARGS=--no-pause for the runs ns*/np*, formerly one2.sh)
V=$1; T=$2; shift 2
rm -f /work/perfx/out-$T.txt
cd /work/main
export PYTHONUNBUFFERED=1 PYXEN_XEN_SOURCE=/work/shared/xen/xen-4.22.0.tar.xz
( .venv/bin/python -P /work/perfx/watch.py /work/perfx/snap-$T.json /work/perfx/out-$T.txt ) &
W=$!
.venv/bin/python -P -m pyxen.lab run --variant $V --profile --memory 4096 --bind /work/perfx --bind /work/main --timeout 1500 "$@" -- sh -c "cd /work/main && .venv/bin/python -P /work/perfx/storm.py 4 $STORM_ARGS" > /work/perfx/out-$T.txt 2>&1
echo "rc=$?" >> /work/perfx/out-$T.txt
sleep 1; kill $W 2>/dev/null
