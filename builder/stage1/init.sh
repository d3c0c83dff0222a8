#!/bin/busybox sh
# kiln stage 1: find this slot's root and the data partition by PARTLABEL, mount them,
# lay writable /etc and /var over the read-only root, and hand over to Node as PID 1.
# Any failure reboots, so the boot loader's tries counter can fall back to the other slot.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "kiln-stage1: $*" > /dev/console; }
fail() {
  say "FATAL: $*"
  if grep -q 'kiln.stage1=shell' /proc/cmdline; then setsid cttyhack sh; fi
  say "rebooting in 5 s (the boot loader falls back after the slot's tries are spent)"
  sleep 5; echo b > /proc/sysrq-trigger; reboot -f
}
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}"; return;; esac; done; }

say "started, kernel $(uname -r)"
for m in $(cat /etc/kiln/stage1-modules); do modprobe "$m" 2>/dev/null || say "module $m failed"; done

# The slot: kiln.slot= when a boot loader passes it (U-Boot on the Pi, direct kernel boot);
# otherwise the systemd-boot entry that was picked (LoaderEntrySelected, UTF-16 after 4
# attribute bytes), so one unified kernel image serves either slot.
SLOT=$(arg kiln.slot)
if [ -z "$SLOT" ] && [ -d /sys/firmware/efi ]; then
  mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
  ENTRY=$(tail -c +5 /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f 2>/dev/null | tr -d '\000')
  case "$ENTRY" in kiln-a*) SLOT=a;; kiln-b*) SLOT=b;; esac
fi
SLOT=${SLOT:-a}
say "slot $SLOT${ENTRY:+ (boot entry $ENTRY)}"

# Block devices appear asynchronously after the drivers load.
partdev() {
  for u in /sys/class/block/*/uevent; do
    if grep -qx "PARTNAME=$1" "$u"; then sed -n 's/^DEVNAME=//p' "$u"; return; fi
  done
}
i=0; ROOT=""
while [ -z "$ROOT" ] && [ $i -lt 500 ]; do ROOT=$(partdev "kiln-root-$SLOT"); [ -n "$ROOT" ] || usleep 20000; i=$((i+1)); done
[ -n "$ROOT" ] || fail "no partition labelled kiln-root-$SLOT"
mount -t squashfs -o ro "/dev/$ROOT" /newroot 2>/dev/null || mount -t erofs -o ro "/dev/$ROOT" /newroot \
  || fail "cannot mount /dev/$ROOT (kiln-root-$SLOT) as squashfs or erofs"
[ -x /newroot/usr/bin/node ] || fail "kiln-root-$SLOT has no /usr/bin/node"

DATA=$(partdev kiln-data)
if [ -n "$DATA" ]; then
  if ! mount -t ext4 -o noatime "/dev/$DATA" /newroot/data 2>/dev/null; then
    # Only a blank partition is formatted: never destroy something we cannot read.
    if [ "$(dd if=/dev/$DATA bs=65536 count=16 2>/dev/null | tr -d '\000' | wc -c)" = 0 ]; then
      say "data partition /dev/$DATA is blank: formatting"
      mke2fs -q -L kiln-data "/dev/$DATA" && mount -t ext4 -o noatime "/dev/$DATA" /newroot/data
    fi
  fi
fi
if ! grep -q ' /newroot/data ' /proc/mounts; then
  say "WARNING: data partition unavailable; /etc and /var changes will not persist"
  mount -t tmpfs -o mode=0755 tmpfs /newroot/data
fi
for d in etc var root home; do
  mkdir -p /newroot/data/overlay/$d/upper /newroot/data/overlay/$d/work
  mount -t overlay overlay -o lowerdir=/newroot/$d,upperdir=/newroot/data/overlay/$d/upper,workdir=/newroot/data/overlay/$d/work /newroot/$d \
    || fail "cannot mount the /$d overlay"
done

mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
# tini is the kernel's PID 1: it reaps every orphan (Node cannot wait for processes it did not
# start) and forwards signals to init, which runs as its only child.
[ -x /newroot/usr/bin/tini ] || fail "kiln-root-$SLOT has no /usr/bin/tini"
export KILN_SLOT=$SLOT
exec switch_root /newroot /usr/bin/tini -- /usr/bin/node /usr/lib/kiln/init.js
