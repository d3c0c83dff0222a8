import { PiVm } from './e2e/pi-vm.ts';
import { scratchCopy } from './e2e/image.ts';
async function main() {
  const disk = await scratchCopy('/work/main/out/test-rpi/kiln-0.0.1-test-arm64.rpi.img', 'sd.img');
  console.log(disk);
  const vm = await PiVm.start(disk);
  try {
    const m = await vm.waitFor(/kiln: ready version=\S+ slot=[ab] arch=\S+|kiln-stage1: FATAL.*|Kernel panic.*/, 420_000);
    console.log('MATCH', m[0], vm.elapsed());
    await vm.waitFor(/blessed slot a.*|cannot bless.*|not blessing.*/, 120_000).then((x) => console.log('BLESS', x[0], vm.elapsed())).catch((e) => console.log(String(e).slice(0, 300)));
  } finally { await vm.kill(); }
}
main().catch((e) => { console.error(String(e).slice(-4000)); process.exit(1); });
