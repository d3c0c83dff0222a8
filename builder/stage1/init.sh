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

# Every $(...) and every applet but the shell's builtins is a fork, which an emulated CPU pays
# for with a new address space: stage 1 reads files with `read` and cuts strings with the
# shell's own expansions where it can.
read -r CMDLINE < /proc/cmdline; read -r KVER < /proc/sys/kernel/osrelease
say() { echo "kiln-stage1: $*" > /dev/console; }
fail() {
  say "FATAL: $*"
  if grep -q 'kiln.stage1=shell' /proc/cmdline; then setsid cttyhack sh; fi
  say "rebooting in 5 s (the boot loader falls back after the slot's tries are spent)"
  sleep 5; echo b > /proc/sysrq-trigger; reboot -f
}
# argv VAR NAME: VAR is the value of the command line's first NAME=, or empty.
argv() { eval "$1="; set -f; for w in $CMDLINE; do case "$w" in "$2="*) eval "$1=\${w#*=}"; break;; esac; done; set +f; }

say "started, kernel $KVER"
# One modprobe for the list (each is a fork and a read of modules.dep); one by one only to name a failure.
MODS=""; while read -r m; do MODS="$MODS $m"; done < /etc/kiln/stage1-modules
modprobe -a $MODS 2>/dev/null || for m in $MODS; do modprobe "$m" 2>/dev/null || say "module $m failed"; done
# The CPU's own SHA-256 and CRC32C, before dm-verity and ext4 pick an implementation: each module
# whose instructions /proc/cpuinfo lists ("module flag" lines). Without them the kernel's C code does it.
cpu_modules() {
  flags=""
  while IFS= read -r l; do case "$l" in flags*|Features*) flags=" ${l#*:} "; break;; esac; done < /proc/cpuinfo
  while read -r m f; do
    case "$flags" in *" $f "*) modprobe -q "$m" 2>/dev/null;; esac
  done < /etc/kiln/stage1-cpu-modules
}
cpu_modules

# Coldplug (profiles with modules.coldplug_stage1): load the driver of each device present by
# its modalias, matched against the modules.alias the builder wrote (busybox modprobe reads its
# globs). Repeated while waiting for disks: a controller's driver brings new devices (a USB
# stick behind xhci) a moment later. Only modaliases not tried before are passed on.
mkdir -p /tmp; : > /tmp/modalias.seen
coldplug() {
  [ -e "/lib/modules/$KVER/modules.alias" ] || return 0
  find /sys/devices -name modalias -type f 2>/dev/null | xargs cat 2>/dev/null | sort -u > /tmp/modalias.now
  sort /tmp/modalias.seen /tmp/modalias.seen /tmp/modalias.now | uniq -u > /tmp/modalias.new
  [ -s /tmp/modalias.new ] || return 0
  tr '\n' '\0' < /tmp/modalias.new | xargs -0 modprobe -qa 2>/dev/null
  cat /tmp/modalias.new >> /tmp/modalias.seen
}
coldplug


# Block devices appear asynchronously after the drivers load.
# A block device's PARTNAME and DEVNAME (into U_PART, U_DEV), read by the shell itself: these
# run for every device on every turn of the waits below, where a grep and a sed each are forks.
uevent() {
  U_PART=""; U_DEV=""; [ -r "$1" ] || return 0
  while IFS='=' read -r k v || [ -n "$k" ]; do
    case "$k" in PARTNAME) U_PART=$v;; DEVNAME) U_DEV=$v;; esac
  done < "$1"
}
# The disk a partition (or any block device, /sys/class/block/$1) belongs to, into U_DISK:
# the last component of its sysfs folder's parent.
diskof() { U_DISK=""; cd -P "/sys/class/block/$1/.." 2>/dev/null && U_DISK=${PWD##*/}; cd /; }
# A partition labelled $1, into U_FOUND: on BOOTDISK when known, else the only one; '!' when two
# disks have it (a copy of this disk, or one made to look like it, must never supply the root).
partdev() {
  U_FOUND=""
  for u in /sys/class/block/*/uevent; do
    uevent "$u"; [ "$U_PART" = "$1" ] || continue
    if [ -n "$BOOTDISK" ]; then [ -e "/sys/block/$BOOTDISK/$U_DEV" ] && { U_FOUND=$U_DEV; return; }
    elif [ -n "$U_FOUND" ]; then U_FOUND='!'; return
    else U_FOUND=$U_DEV; fi
  done
}
# Unique GUID (lower case) of GPT partition $1 (entries at LBA 2, as kiln writes them) into
# U_GUID: the first three fields are stored little-endian.
partuuid() {
  U_GUID=""; diskof "$1"; d=$U_DISK; read -r n < "/sys/class/block/$1/partition"
  ss=512; [ -r "/sys/block/$d/queue/logical_block_size" ] && read -r ss < "/sys/block/$d/queue/logical_block_size"
  set -- $(dd if="/dev/$d" bs=1 skip=$((ss * 2 + (n - 1) * 128 + 16)) count=16 2>/dev/null | od -An -tx1)
  [ $# = 16 ] || return 0
  U_GUID="$4$3$2$1-$6$5-$8$7-$9${10}-${11}${12}${13}${14}${15}${16}"
}
# Hex text $1 in lower case, into U_LOW (GUIDs and disk signatures hold nothing else).
lower() {
  U_LOW=""; s=$1
  while [ -n "$s" ]; do
    c=${s%"${s#?}"}; s=${s#?}
    case "$c" in A) c=a;; B) c=b;; C) c=c;; D) c=d;; E) c=e;; F) c=f;; esac
    U_LOW=$U_LOW$c
  done
}
# The disk holding the ESP the firmware booted (ESPUUID, lower case), into U_FOUND; '!' when
# two disks do.
espdisk() {
  U_FOUND=""
  for u in /sys/class/block/*/uevent; do
    uevent "$u"; [ "$U_PART" = esp ] || continue
    p=$U_DEV; partuuid "$p"
    [ "$U_GUID" = "$ESPUUID" ] || continue
    [ -n "$U_FOUND" ] && { U_FOUND='!'; return; }
    diskof "$p"; U_FOUND=$U_DISK
  done
}
# kiln.root= / kiln.data= name partitions where there are no partition names (MBR on the Pi,
# passed by the U-Boot script): /dev/NAME, or PARTUUID=<MBR disk signature>-<number> as Linux
# spells it. The device name without /dev, into U_FOUND.
specdev() {
  U_FOUND=""
  case "$1" in
    /dev/*) [ -b "$1" ] && U_FOUND=${1#/dev/};;
    PARTUUID=*)
      lower "${1#PARTUUID=}"; want=$U_LOW; hex=0123456789abcdef
      for p in /sys/class/block/*/partition; do
        [ -e "$p" ] || continue
        d=${p%/partition}; diskof "${d##*/}"; disk=$U_DISK
        [ -z "$BOOTDISK" ] || [ "$disk" = "$BOOTDISK" ] || continue
        set -- $(dd if="/dev/$disk" bs=1 skip=440 count=4 2>/dev/null | od -An -tx1)
        read -r n < "$p"
        [ "$4$3$2$1-${hex:$((n / 16)):1}${hex:$((n % 16)):1}" = "$want" ] || continue
        # Two cards with one signature (the same image written twice): no guessing.
        [ -n "$U_FOUND" ] && { U_FOUND='!'; return; }
        U_FOUND=${d##*/}
      done;;
  esac
}
# The driver the kernel picks for a hash: the highest priority one registered for its name.
hashdriver() {
  awk -v want="$1" '$1 == "name" { n = $3 } $1 == "driver" { d = $3 } $1 == "priority" && n == want && $3 > p { p = $3; best = d } END { print best ? best : "?" }' /proc/crypto
}

# efivar FILE: an EFI variable's ASCII text in UTF-16, into U_VAR. `read` drops NUL bytes (the
# text's high bytes and its terminator); the 4 attribute bytes before it leave one character,
# their first byte (never NUL: a variable stage 1 can read has at least the boot-service bit).
efivar() { U_VAR=""; [ -r "$1" ] && IFS= read -r U_VAR < "$1"; U_VAR=${U_VAR#?}; }

# The slot: kiln.slot= when a boot loader passes it (U-Boot on the Pi, direct kernel boot);
# otherwise the systemd-boot entry that was picked (LoaderEntrySelected), so one unified kernel
# image serves either slot.
argv SLOT kiln.slot; argv LIVE kiln.live; ESPUUID=""
if [ -d /sys/firmware/efi ] && [ -z "$LIVE" ]; then
  mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
  LV=/sys/firmware/efi/efivars/Loader; LG=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
  [ -z "$SLOT" ] && { efivar "${LV}EntrySelected-$LG"; ENTRY=$U_VAR; }
  case "$ENTRY" in kiln-a*) SLOT=a;; kiln-b*) SLOT=b;; esac
  # The ESP systemd-boot was started from: its disk is the only one whose partitions we use.
  efivar "${LV}DevicePartUUID-$LG"; lower "$U_VAR"; ESPUUID=$U_LOW
fi
SLOT=${SLOT:-a}
say "slot $SLOT${ENTRY:+ (boot entry $ENTRY)}"

# dm-verity: kiln.verity=sha256:<data blocks>:<salt>:<root hash> from the UKI's command line
# (signed with it under Secure Boot), else /etc/kiln/verity in this initramfs (the Pi's slot
# boot files). The tree follows the data after one superblock block. A bad block reboots
# (restart_on_corruption), so the tries counter moves on to the other slot.
argv VERITY kiln.verity; [ -n "$VERITY" ] || { [ -r /etc/kiln/verity ] && read -r VERITY < /etc/kiln/verity; }
VERIFIED=""
verity_open() { # $1: device name without /dev/; mounts the verified root on /newroot
  oifs=$IFS; IFS=:; set -f; set -- "$1" $VERITY; set +f; IFS=$oifs
  [ "$2" = sha256 ] && [ -n "$5" ] || fail "malformed root hash parameter: $VERITY"
  [ "$(dd if="/dev/$1" bs=2 skip=$(($3 * 2048)) count=3 2>/dev/null)" = verity ] \
    || fail "/dev/$1 (kiln-root-$SLOT) has no hash tree where its root hash says: corrupt, or not the root this kernel was built for"
  LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/lib/aarch64-linux-gnu:/usr/lib/x86_64-linux-gnu:/usr/lib/aarch64-linux-gnu \
    dmsetup create kiln-root --readonly --noudevsync \
    --table "0 $(($3 * 8)) verity 1 /dev/$1 /dev/$1 4096 4096 $3 $(($3 + 1)) sha256 $5 $4 1 restart_on_corruption" \
    || fail "cannot set up dm-verity on /dev/$1 (are dm_mod and dm_verity in modules.stage1?)"
  dm=""; for n in /sys/block/dm-*/dm/name; do nm=""; [ -r "$n" ] && read -r nm < "$n"; [ "$nm" = kiln-root ] && { dm=${n#/sys/block/}; dm=${dm%%/*}; }; done
  [ -n "$dm" ] || fail "dm-verity device for /dev/$1 did not appear"
  mount -t squashfs -o ro "/dev/$dm" /newroot 2>/dev/null || mount -t erofs -o ro "/dev/$dm" /newroot \
    || fail "cannot mount the verified root /dev/$dm (/dev/$1, kiln-root-$SLOT)"
  VERIFIED=$5
  say "root /dev/$1 verified by dm-verity (root hash ${5%"${5#????????????????}"}..., $2 by $(hashdriver "$2"))"
}

# Live mode (the ISO, kiln.live=<volume label>): the root image is a file on the medium,
# loop-mounted read-only; data is tmpfs unless the medium's own disk has a kiln-data volume
# (never a disk's kiln-data: that disk may be the one being installed to).
if [ -n "$LIVE" ]; then
  i=0; MEDIUM=""
  while [ -z "$MEDIUM" ] && [ $i -lt 300 ]; do MEDIUM=$(findfs "LABEL=$LIVE" 2>/dev/null); [ -n "$MEDIUM" ] || { [ $((i % 10)) = 9 ] && coldplug; usleep 100000; }; i=$((i+1)); done
  [ -n "$MEDIUM" ] || fail "live: no medium labelled $LIVE (CD drive or USB stick; is its driver in modules.stage1?)"
  mkdir -p /iso
  mount -t iso9660 -o ro "$MEDIUM" /iso || fail "live: cannot mount $MEDIUM"
  if [ -n "$VERITY" ]; then
    LOOP=$(losetup -f) && losetup -r "$LOOP" /iso/kiln/root.img || fail "live: cannot attach the root image on $MEDIUM to a loop device"
    verity_open "${LOOP#/dev/}"
  else
    mount -t squashfs -o ro,loop /iso/kiln/root.img /newroot 2>/dev/null || mount -t erofs -o ro,loop /iso/kiln/root.img /newroot \
      || fail "live: cannot mount the root image on $MEDIUM"
  fi
  say "live: root image from $MEDIUM"
  ROOT="$MEDIUM:kiln/root.img"
  DISK=${MEDIUM#/dev/}
  [ -e "/sys/class/block/$DISK/partition" ] && { diskof "$DISK"; DISK=$U_DISK; }
  DATA=""
  for p in /sys/block/$DISK/$DISK*; do
    [ -e "$p" ] && blkid "/dev/${p##*/}" 2>/dev/null | grep -q 'LABEL="kiln-data"' && DATA=${p##*/}
  done
else
  i=0; ROOT=""; BOOTDISK=""; argv ROOTSPEC kiln.root
  if [ -n "$ROOTSPEC" ]; then
    while [ -z "$ROOT" ] && [ $i -lt 500 ]; do specdev "$ROOTSPEC"; ROOT=$U_FOUND; [ -n "$ROOT" ] || { [ $((i % 50)) = 49 ] && coldplug; usleep 20000; }; i=$((i+1)); done
    [ "$ROOT" = '!' ] && fail "two disks have a partition $ROOTSPEC (kiln.root): remove the copy"
    [ -n "$ROOT" ] || fail "no partition $ROOTSPEC (kiln.root, slot $SLOT)"
    say "root $ROOTSPEC is /dev/$ROOT"
  else
    if [ -n "$ESPUUID" ]; then
      while [ -z "$BOOTDISK" ] && [ $i -lt 500 ]; do espdisk; BOOTDISK=$U_FOUND; [ -n "$BOOTDISK" ] || { [ $((i % 50)) = 49 ] && coldplug; usleep 20000; }; i=$((i+1)); done
      [ "$BOOTDISK" = '!' ] && fail "two disks hold the ESP this machine booted from (PARTUUID $ESPUUID): remove or wipe the copy"
      [ -n "$BOOTDISK" ] && say "boot disk /dev/$BOOTDISK" || say "no disk holds the ESP $ESPUUID; looking for labels on every disk"
      i=0
    fi
    while [ -z "$ROOT" ] && [ $i -lt 500 ]; do partdev "kiln-root-$SLOT"; ROOT=$U_FOUND; [ -n "$ROOT" ] || { [ $((i % 50)) = 49 ] && coldplug; usleep 20000; }; i=$((i+1)); done
    [ "$ROOT" = '!' ] && fail "two disks have a partition labelled kiln-root-$SLOT and none is known to be the boot disk: remove the copy"
    [ -n "$ROOT" ] || fail "no partition labelled kiln-root-$SLOT${BOOTDISK:+ on /dev/$BOOTDISK}"
  fi
  if [ -n "$VERITY" ]; then verity_open "$ROOT"
  else
    mount -t squashfs -o ro "/dev/$ROOT" /newroot 2>/dev/null || mount -t erofs -o ro "/dev/$ROOT" /newroot \
      || fail "cannot mount /dev/$ROOT (kiln-root-$SLOT) as squashfs or erofs"
  fi
  # The root's disk from here on, whichever way the root was found.
  diskof "$ROOT"; BOOTDISK=$U_DISK
  argv DATASPEC kiln.data
  if [ -n "$DATASPEC" ]; then
    specdev "$DATASPEC"; DATA=$U_FOUND; [ "$DATA" = '!' ] && DATA=""
    [ -n "$DATA" ] || say "no single partition $DATASPEC (kiln.data)"
  else partdev kiln-data; DATA=$U_FOUND; fi
fi
[ -x /newroot/usr/bin/node ] || fail "kiln-root-$SLOT has no /usr/bin/node"

DATAOK=""
if [ -n "$DATA" ]; then
  if mount -t ext4 -o noatime "/dev/$DATA" /newroot/data 2>/dev/null; then DATAOK=1
  # Only a blank partition is formatted: never destroy something we cannot read.
  elif [ "$(dd if=/dev/$DATA bs=65536 count=16 2>/dev/null | tr -d '\000' | wc -c)" = 0 ]; then
    say "data partition /dev/$DATA is blank: formatting"
    mke2fs -q -L kiln-data "/dev/$DATA" && mount -t ext4 -o noatime "/dev/$DATA" /newroot/data && DATAOK=1
  fi
fi
if [ -z "$DATAOK" ]; then
  if [ -n "$LIVE" ]; then say "live: data on tmpfs (nothing persists)"
  else say "WARNING: data partition unavailable; /etc and /var changes will not persist"; fi
  mount -t tmpfs -o mode=0755 tmpfs /newroot/data
fi
# /etc starts from the root every boot: its upper is on /run's tmpfs (init keeps that mount),
# so no file on data can hide or replace the root's. Init puts the named state back from /data.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run || fail "cannot mount /run"
O=/newroot/data/overlay E=/newroot/run/kiln/etc
mkdir -p $O/var/upper $O/var/work $O/root/upper $O/root/work $O/home/upper $O/home/work $E/upper $E/work
for d in var root home; do
  mount -t overlay overlay -o lowerdir=/newroot/$d,upperdir=$O/$d/upper,workdir=$O/$d/work /newroot/$d \
    || fail "cannot mount the /$d overlay"
done
mount -t overlay overlay -o lowerdir=/newroot/etc,upperdir=$E/upper,workdir=$E/work /newroot/etc \
  || fail "cannot mount the /etc overlay"
# k3s's state on the data partition, bound over /var's overlay (containerd's snapshotter cannot
# sit on an overlayfs): here a mount is a shell's fork, and from Node a spawn on the way to
# k3s's start. Init binds whatever it finds unbound (prepareK3sHost, init/services/k3s.ts).
for d in rancher kubelet; do
  mkdir -p /newroot/data/$d /newroot/var/lib/$d && mount -o bind /newroot/data/$d /newroot/var/lib/$d 2>/dev/null
done

# The rest of the pseudo filesystems a Kubernetes node needs, mounted here, where a mount costs
# a shell's fork rather than a spawn from Node; init mounts whatever it finds missing
# (mountBase in init/system.ts), so these are an optimisation, not a contract. The /dev/fd
# links are left to init, where each is a call, not a process.
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm 2>/dev/null
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null
[ -d /sys/kernel/security ] && mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp 2>/dev/null
# The loopback interface likewise (network/loopback brings it up when it is not).
ip link set lo up 2>/dev/null

# The ESP, found as init finds it (test/unit/boot-disk.test.ts holds the two together) while
# /sys is still here: the boot disk's partition labelled esp, else kiln.boot= (the Pi's MBR
# card, which has no partition names). The live system has none.
ESP=""
if [ -z "$LIVE" ]; then
  partdev esp; ESP=$U_FOUND
  if [ -z "$ESP" ] || [ "$ESP" = '!' ]; then argv ESPSPEC kiln.boot; specdev "$ESPSPEC"; ESP=$U_FOUND; fi
  [ "$ESP" = '!' ] && ESP=""
fi

argv FLOOR kiln.floor
mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
# tini is the kernel's PID 1: it reaps every orphan (Node cannot wait for processes it did not
# start) and forwards signals to init, which runs as its only child.
[ -x /newroot/usr/bin/tini ] || fail "kiln-root-$SLOT has no /usr/bin/tini"
# kubelet's mount propagation needs / shared; the mounts made under it later are shared too.
mount --make-rshared /newroot 2>/dev/null
export KILN_SLOT=$SLOT KILN_VERITY=$VERIFIED
# kiln.floor=sh|node|modules (npm run bench only): hand over to a program that prints one line
# and idles instead of init, so the bench measures what the kernel, stage 1 and Node cost on
# their own; `modules` first loads the image's module lists as init does (the kernel's share
# of boot's work, which no init can skip), then runs the node floor, and then Node once more
# (`again`: its pages now in the page cache, so the two starts differ by what reading Node off
# the verified root costs). "init started" is when Node's own code began, as init's timings
# line counts it; "process started" is the process's start (/proc/self/stat), before the
# kernel loaded Node and its libraries and they ran their constructors. A fixed choice, not a
# path: the command line cannot name a program to run as PID 1's child.
NODE_FLOOR='const u = require("fs").readFileSync("/proc/uptime", "utf8").split(" ")[0]; console.log(`kiln-floor: ${process.env.KILN_FLOOR} ready ${u} s after the kernel; init started ${(u - process.uptime()).toFixed(2)} s after the kernel; process started ${(Number((s => s.slice(s.lastIndexOf(")") + 2).split(" ")[19])(require("fs").readFileSync("/proc/self/stat", "utf8"))) / 100).toFixed(2)} s after the kernel; rss ${(process.memoryUsage().rss / 1048576).toFixed(1)} MiB (${require("fs").readFileSync("/proc/self/status", "utf8").split("\n").filter((l) => /^Rss(Anon|File):/.test(l)).map((l) => `${l.slice(3, 7).toLowerCase()} ${(parseInt(l.split(/\s+/)[1]) / 1024).toFixed(1)}`).join(", ")}); heap limit ${(require("v8").getHeapStatistics().heap_size_limit / 1048576).toFixed(0)} MiB`); process.env.KILN_FLOOR_ONCE || setInterval(() => {}, 1 << 30)'
case "$FLOOR" in
  sh) exec switch_root /newroot /usr/bin/tini -- /bin/sh -c 'echo "kiln-floor: sh ready $(cut -d" " -f1 /proc/uptime) s after the kernel" > /dev/console; exec sleep 2147483647';;
  node) KILN_FLOOR=node exec switch_root /newroot /usr/bin/tini -- /usr/bin/node -e "$NODE_FLOOR";;
  modules) KILN_FLOOR=modules exec switch_root /newroot /usr/bin/tini -- /bin/sh -c 'modprobe -a $(cat /usr/lib/kiln/modules-load /usr/lib/kiln/modules-load-k3s 2>/dev/null) 2>/dev/null; KILN_FLOOR_ONCE=1 /usr/bin/node -e "$1"; KILN_FLOOR=again /usr/bin/node -e "$1" & wait' kiln-floor "$NODE_FLOOR";;
esac
# The root's module lists (the image's drivers, then k3s's netfilter, bridges and VXLAN), loaded
# here in one modprobe before Node starts rather than by init beside its first tasks: alone on
# the CPU they cost what the bench's `modules` floor shows, while beside Node's tasks an
# emulated CPU switched between the two throughout. Init loads whatever is still missing and
# names any failure (loadListed in init/boot/tasks.ts), so nothing here is fatal.
MODS= N=0
for f in /newroot/usr/lib/kiln/modules-load /newroot/usr/lib/kiln/modules-load-k3s; do
  [ -r "$f" ] && while read -r m || [ -n "$m" ]; do [ -n "$m" ] && MODS="$MODS $m" N=$((N + 1)); done < "$f"
done
if [ -n "$MODS" ]; then
  if chroot /newroot /bin/modprobe -a $MODS 2>/dev/null; then say "root modules loaded ($N)"
  else say "not all of the root's $N modules loaded: init names the missing"; fi
fi
# The ESP on /efi, now that vfat is loaded (above): a fork of busybox here rather than a spawn
# from Node on the way to ready. Init mounts it when it is not mounted (data/esp) and says why
# when it cannot, so a failure here is left to it. The options are init's ESP_OPTIONS.
[ -n "$ESP" ] && chroot /newroot /bin/mount -t vfat -o rw,noatime,umask=0077,shortname=mixed,utf8=0,iocharset=ascii "/dev/$ESP" /efi 2>/dev/null
# Tier up to TurboFan ten times later than by default, and skip V8's baseline (Sparkplug) and
# mid-tier (Maglev) compilers: boot's code runs a few times and is done, so compiling it again
# only costs a one-CPU board time and touches the compilers' pages (Maglev alone was 2.2 MiB of
# RSS at ready); loops that run long (the updater's chunking) still reach TurboFan within
# milliseconds. glibc's malloc thresholds stay at 128 KiB: by default glibc raises them to the
# largest block freed so far and then keeps up to twice that of freed memory in the heap (0.8 to
# 0.9 MiB of init's RSS at ready), and one arena serves every thread: init's threads (libuv's
# pool, V8's worker) do little, and each arena of its own kept its own free memory. init takes
# the setting out of its environment (init/own-env.ts), so the programs it starts keep glibc's
# defaults. Measured in docs/design.md (boot speed).
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072:glibc.malloc.arena_max=1 \
  exec switch_root /newroot /usr/bin/tini -- /usr/bin/node --no-sparkplug --invocation-count-for-turbofan=30000 --no-maglev /usr/lib/kiln/init.js
