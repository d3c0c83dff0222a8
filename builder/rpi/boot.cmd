# kiln A/B boot script for U-Boot on the Raspberry Pi (compiled to boot.scr by the builder).
# State lives in uboot.env on this FAT partition (RAUC's names, so its tools read it too):
#   BOOT_ORDER   slots by preference, e.g. "a b"; a slot not listed is never booted
#   BOOT_<s>_LEFT tries left; the node resets it to @TRIES@ once it is healthy ("blessing")
# Each boot takes a try from the first listed slot that has one and saves that BEFORE loading
# anything, so a kernel that hangs or resets still used up its try.
echo "kiln: boot.scr: order ${BOOT_ORDER}, tries a=${BOOT_a_LEFT} b=${BOOT_b_LEFT}"
test -n "${devtype}" || setenv devtype mmc
test -n "${devnum}" || setenv devnum 0
# A missing or corrupt uboot.env gives U-Boot's defaults: boot slot a, as a fresh card would.
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER a
test -n "${BOOT_a_LEFT}" || setenv BOOT_a_LEFT @TRIES@
test -n "${BOOT_b_LEFT}" || setenv BOOT_b_LEFT 0

setenv kiln_slot
for s in ${BOOT_ORDER}; do
  if test -n "${kiln_slot}"; then
    true
  elif test "${s}" = a && test ${BOOT_a_LEFT} -gt 0; then
    setexpr BOOT_a_LEFT ${BOOT_a_LEFT} - 1
    setenv kiln_slot a; setenv kiln_rootpart 2
  elif test "${s}" = b && test ${BOOT_b_LEFT} -gt 0; then
    setexpr BOOT_b_LEFT ${BOOT_b_LEFT} - 1
    setenv kiln_slot b; setenv kiln_rootpart 3
  fi
done

# Board facts U-Boot sets only when they are absent from the environment must never be saved,
# or a card moved to another Pi (or a moved device tree) keeps stale ones. fdt_addr is the one
# that broke a boot in the lab; fdtfile and usbethaddr are the same kind. (ethaddr is
# write-once in U-Boot and cannot be cleared here: the node drops it when it blesses.)
setenv kiln_fdt_addr "${fdt_addr}"; setenv fdt_addr
setenv kiln_fdtfile "${fdtfile}"; setenv fdtfile
setenv kiln_usbethaddr "${usbethaddr}"; setenv usbethaddr

if test -z "${kiln_slot}"; then
  # Every listed slot spent its tries: start counting again rather than stop for good.
  echo "kiln: no slot in '${BOOT_ORDER}' has tries left; giving each @TRIES@ again"
  for s in ${BOOT_ORDER}; do setenv BOOT_${s}_LEFT @TRIES@; done
  saveenv
  reset
fi
saveenv
setenv fdt_addr "${kiln_fdt_addr}"; setenv fdtfile "${kiln_fdtfile}"; setenv usbethaddr "${kiln_usbethaddr}"

echo "kiln: booting slot ${kiln_slot} (tries left a=${BOOT_a_LEFT} b=${BOOT_b_LEFT})"
# The slot's kernel is a plain arm64 Image; 2 MiB is where arm64 wants it.
setenv kernel_addr_r 0x00200000
if load ${devtype} ${devnum}:1 ${kernel_addr_r} ${kiln_slot}/vmlinuz && load ${devtype} ${devnum}:1 ${ramdisk_addr_r} ${kiln_slot}/initrd; then
  setenv kiln_initrd_size ${filesize}
else
  echo "kiln: slot ${kiln_slot} has no kernel or initrd on the boot partition; taking its tries"
  setenv BOOT_${kiln_slot}_LEFT 0
  setenv fdt_addr; setenv fdtfile; setenv usbethaddr
  saveenv
  reset
fi
# The device tree the firmware (or QEMU) handed over, else the board's file from this partition.
if test -n "${fdt_addr}" && fdt addr -q ${fdt_addr}; then
  setenv kiln_dtb ${fdt_addr}
elif load ${devtype} ${devnum}:1 ${fdt_addr_r} ${fdtfile}; then
  setenv kiln_dtb ${fdt_addr_r}
else
  echo "kiln: no device tree (fdt_addr '${fdt_addr}', fdtfile '${fdtfile}')"; reset
fi
# Partitions by PARTUUID: the card may be mmcblk0 or mmcblk1 (or a USB disk) under Linux.
setenv kiln_parts ""
if part uuid ${devtype} ${devnum}:${kiln_rootpart} kiln_root && part uuid ${devtype} ${devnum}:4 kiln_data && part uuid ${devtype} ${devnum}:1 kiln_boot; then
  setenv kiln_parts "kiln.root=PARTUUID=${kiln_root} kiln.data=PARTUUID=${kiln_data} kiln.boot=PARTUUID=${kiln_boot}"
else
  setenv kiln_parts "kiln.root=/dev/mmcblk0p${kiln_rootpart} kiln.data=/dev/mmcblk0p4 kiln.boot=/dev/mmcblk0p1"
fi
setenv bootargs "@CMDLINE@ kiln.slot=${kiln_slot} ${kiln_parts}"
echo "kiln: booti ${kiln_slot}: ${bootargs}"
booti ${kernel_addr_r} ${ramdisk_addr_r}:${kiln_initrd_size} ${kiln_dtb}
echo "kiln: booti failed"
reset
