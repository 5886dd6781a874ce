#!/bin/sh
# PID 1 of the lab's dom0 initramfs (busybox).  Builds a root from the host's
# files over 9p -- a tmpfs root with the host's /usr (and the paths the lab
# lists) bind-mounted from the read-only 9p share, a copy of /etc, fresh
# proc/sys/dev -- then runs the lab agent in it.  When
# the agent exits, for whatever reason, dom0 powers off, which ends Xen and QEMU.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "pyxen-init: FATAL: $*"
    sync
    echo o > /proc/sysrq-trigger
    sleep 10
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

while read -r mod; do
    insmod "/modules/$mod" || echo "pyxen-init: insmod $mod failed"
done < /modules.order

mkdir -p /host /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /host \
    || fail "cannot mount the host share"
mount -t tmpfs -o mode=0755 tmpfs /newroot || fail "cannot mount the new root"
mkdir -p /newroot/xchg
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 xchg /newroot/xchg \
    || fail "cannot mount the exchange share"
LAB=/newroot/xchg/lab
[ -r "$LAB/python" ] || fail "no $LAB/python"

for d in proc sys dev run tmp var root home mnt usr; do
    mkdir -p "/newroot/$d"
done
chmod 1777 /newroot/tmp
mount --bind /host/usr /newroot/usr
for l in bin sbin lib lib32 lib64 libx32; do
    [ -e "/host/$l" ] && ln -s "usr/$l" "/newroot/$l"
done
cp -a /host/etc /newroot/etc 2>/dev/null
while read -r p; do
    [ -n "$p" ] || continue
    mkdir -p "/newroot$p"
    mount --bind "/host$p" "/newroot$p" || echo "pyxen-init: cannot bind $p"
done < "$LAB/binds"

mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev

echo "pyxen-init: starting the lab agent"
chroot /newroot /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    PYTHONPATH="$(cat "$LAB/pythonpath")" PYTHONDONTWRITEBYTECODE=1 \
    "$(cat "$LAB/python")" -m pyxen.lab.dom0.agent /xchg
echo "pyxen-init: agent exited with status $?"
sync
echo o > /proc/sysrq-trigger
sleep 30
