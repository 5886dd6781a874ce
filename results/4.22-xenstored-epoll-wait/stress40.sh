#!/bin/sh
# 100 socket clients at once, 20 reads each, while 3 SIGHUPs reopen the log
xenstore-write /pyxen-stress/v hello
P=$(pidof xenstored)
rm -rf /tmp/st; mkdir -p /tmp/st
i=0
while [ $i -lt 100 ]; do
  ( j=0; while [ $j -lt 20 ]; do xenstore-read /pyxen-stress/v >> /tmp/st/$i || echo FAIL >> /tmp/st/$i; j=$((j+1)); done ) &
  i=$((i+1))
done
kill -HUP $P; sleep 0.3; kill -HUP $P; sleep 0.3; kill -HUP $P
wait
echo "reads ok: $(cat /tmp/st/* | grep -c '^hello$') of 2000, failures: $(cat /tmp/st/* | grep -c FAIL)"
xenstore-rm /pyxen-stress
echo "xenstored still $(pidof xenstored) (was $P)"
