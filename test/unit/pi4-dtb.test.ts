// The raspi4b device tree edit (test/e2e/pi-vm.ts): each listed node is disabled (or loses its
// property) and nothing else changes; a tree without one of them is refused by name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import { raspi4bDtb, RASPI4B_DT_EDITS } from '../e2e/pi-vm.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-pi4-dtb-'));

/** A tree with the listed nodes (okay, with the dropped property) plus one untouched node. */
async function tree(skip?: string): Promise<string> {
  const nodes = RASPI4B_DT_EDITS.filter((e) => e.node !== skip).map((e) => {
    const name = e.node.replace(/^\/soc\//, '');
    return `\t\t${name} { status = "okay";${e.drop ? ` ${e.drop} = <1>;` : ''} };`;
  });
  const dts = `/dts-v1/;\n/ {\n\tsoc {\n${nodes.join('\n')}\n\t\tserial@7e201000 { status = "okay"; };\n\t};\n};\n`;
  writeFileSync(join(dir, 'in.dts'), dts);
  const out = join(dir, `in-${skip ? 'short' : 'full'}.dtb`);
  await $({ quiet: true })`dtc -q -I dts -O dtb -o ${out} ${join(dir, 'in.dts')}`;
  return out;
}

const get = async (dtb: string, node: string, prop: string) =>
  (await $({ quiet: true, nothrow: true })`fdtget -t s ${dtb} ${node} ${prop}`);

test('disables each listed node, drops the listed property, leaves the rest', async () => {
  const out = await raspi4bDtb(await tree(), join(dir, 'out.dtb'));
  for (const e of RASPI4B_DT_EDITS) {
    if (e.drop) {
      assert.is.not((await get(out, e.node, e.drop)).exitCode, 0, `${e.node} ${e.drop} is gone`);
      assert.is((await get(out, e.node, 'status')).stdout.trim(), 'okay', `${e.node} stays enabled`);
    } else assert.is((await get(out, e.node, 'status')).stdout.trim(), 'disabled', e.node);
  }
  assert.is((await get(out, '/soc/serial@7e201000', 'status')).stdout.trim(), 'okay');
});

test('a tree without a listed node is refused, naming the node and the fix', async () => {
  const missing = RASPI4B_DT_EDITS[0]!.node;
  const src = await tree(missing);
  try {
    await raspi4bDtb(src, join(dir, 'short-out.dtb'));
    assert.unreachable('should have thrown');
  } catch (e) {
    assert.match((e as Error).message, src);
    assert.match((e as Error).message, missing);
    assert.match((e as Error).message, /RASPI4B_DT_EDITS/);
  }
});

test.run();
