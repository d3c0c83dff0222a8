// Post-boot steps run each on their own: one that throws (the updater refusing its settings,
// its verdict failing) is logged and noted, and blessing, add-ons, uncordoning, update
// polling and the key refresh still happen.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootContext, type BootContext, type NodeUpdater } from '../../init/boot/context.ts';
import { postBootSteps, runPostBoot, type PostBootEdges } from '../../init/boot/post-boot.ts';
import { applyDefaults } from '../../init/config/parse.ts';
import type { KilnConfigInput } from '../../init/config/schema.ts';
import { setConsole } from '../../init/log.ts';
import { Supervisor } from '../../init/services/supervisor.ts';

const tick = () => new Promise((r) => setTimeout(r, 10));

/** A node whose config is `input`, with no k3s (healthy as soon as boot steps passed). */
function node(input: KilnConfigInput, live = false): BootContext {
  const ctx = bootContext({
    info: { version: '1.2.3', arch: 'x86_64', slot: 'b', cmdline: '', kernel: '6.1', chain: { secureBoot: 'off', root: 'unverified' } }, live,
    supervisor: new Supervisor({ logDir: mkdtempSync(join(tmpdir(), 'kiln-postboot-')), say: () => undefined }),
    power: () => { throw new Error('no power action expected'); },
  });
  ctx.chosen = { config: applyDefaults(input), used: 'test', ok: true, problems: [], allowInsecureHttp: false, gathered: { sources: [], scripts: [], notes: [] } };
  return ctx;
}

/** Edges that record what the steps did instead of doing it. */
function recorder(over: Partial<PostBootEdges> = {}) {
  const did: string[] = [];
  const edges: Partial<PostBootEdges> = {
    bless: async (slot) => { did.push(`bless ${slot}`); return `blessed slot ${slot}`; },
    fellBackFrom: () => undefined,
    uncordon: async () => { did.push('uncordon'); },
    addons: async () => { did.push('add-ons'); },
    every: (_fn, ms) => { did.push(`every ${ms}`); },
    pause: async () => undefined,
    ...over,
  };
  return { did, edges };
}

function fakeUpdater(did: string[], afterBoot: NodeUpdater['afterBoot']): NodeUpdater {
  return {
    afterBoot,
    startPolling: (ms: number) => { did.push(`poll ${ms}`); return { stop() {} }; },
    status: () => [], check: async () => { throw new Error('unused'); }, apply: async () => { throw new Error('unused'); }, rollback: async () => { throw new Error('unused'); }, setChannel: () => { throw new Error('unused'); },
  } as NodeUpdater;
}

async function withConsole(fn: () => Promise<void>): Promise<string[]> {
  const lines: string[] = [];
  setConsole((s) => lines.push(s));
  try { await fn(); await tick(); } finally { setConsole((s) => { process.stdout.write(s); }); }
  return lines;
}

test('runPostBoot: a throwing step and a rejecting background step do not stop the others', async () => {
  const ran: string[] = [];
  const notes: string[] = [];
  const lines = await withConsole(() => runPostBoot({ notes }, [
    { name: 'one', run: () => { ran.push('one'); throw new Error('boom'); } },
    { name: 'two', background: true, run: async () => { ran.push('two'); throw new Error('later'); } },
    { name: 'three', run: async () => { ran.push('three'); } },
  ]));
  assert.equal(ran, ['one', 'two', 'three']);
  assert.equal(lines, ['kiln: post-boot/one failed: boom\n', 'kiln: post-boot/two failed: later\n']);
  assert.equal(notes, ['post-boot step one failed: boom', 'post-boot step two failed: later']);
});

test('an updater that refuses its settings (a bad window) does not keep the slot unblessed', async () => {
  // A config from before windows were validated: new Updater() throws on it.
  const ctx = node({ kiln: { updates: { url: 'https://updates.example/kiln', window: 'Saturdays 2am-4am' } } });
  const { did, edges } = recorder();
  const lines = await withConsole(() => runPostBoot(ctx, postBootSteps(ctx, true, edges)));
  assert.equal(did, ['bless b', 'uncordon', 'add-ons', 'every 3600000']);
  assert.ok(lines[0]?.startsWith("kiln: post-boot/updater failed: maintenance window 'Saturdays 2am-4am'"), lines[0]);
  assert.ok(lines.includes('kiln: blessed slot b\n'), lines.join(''));
  assert.is(ctx.updater, undefined);
  assert.match(ctx.updaterProblem ?? '', /maintenance window 'Saturdays 2am-4am'/);
  assert.match(ctx.notes.join('\n'), /post-boot step updater failed: maintenance window/);
});

test('a verdict that throws is reported; uncordon, add-ons, polling and key refresh still run', async () => {
  const ctx = node({ kiln: { updates: { url: 'https://updates.example/kiln', poll_minutes: 10 } } });
  const { did, edges } = recorder({ newUpdater: () => fakeUpdater(did, async () => { throw new Error('ESP gone'); }) });
  const lines = await withConsole(() => runPostBoot(ctx, postBootSteps(ctx, true, edges)));
  // No verdict on a possibly pending update: the slot is left to the boot loader's tries.
  assert.equal(did, ['uncordon', 'add-ons', 'poll 600000', 'every 3600000']);
  assert.equal(lines, ['kiln: post-boot/update verdict failed: ESP gone\n', 'kiln: not blessing slot b: the updater could not judge this boot\n']);
});

test('a failing bless does not stop polling; no update pending means bless when healthy', async () => {
  const ctx = node({ kiln: { updates: { url: 'https://updates.example/kiln', poll_minutes: 10 } } });
  const { did, edges } = recorder({
    newUpdater: () => fakeUpdater(did, async () => ({ outcome: 'none', message: 'no update pending' })),
    fellBackFrom: () => { throw new Error('env unreadable'); },
  });
  const lines = await withConsole(() => runPostBoot(ctx, postBootSteps(ctx, true, edges)));
  assert.equal(did, ['uncordon', 'add-ons', 'poll 600000', 'every 3600000']);
  assert.equal(lines, ['kiln: post-boot/bless failed: env unreadable\n']);
});

test('an update judged by the updater is not blessed again; a failed boot step keeps the slot unblessed', async () => {
  const ctx = node({});
  const { did, edges } = recorder({ newUpdater: () => fakeUpdater(did, async () => ({ outcome: 'blessed', version: '1.2.3', slot: 'b', message: 'm' })) });
  await withConsole(() => runPostBoot(ctx, postBootSteps(ctx, true, edges)));
  assert.equal(did, ['uncordon', 'add-ons', 'every 3600000']); // no url: no polling

  const ctx2 = node({});
  const r2 = recorder({ newUpdater: () => fakeUpdater(r2.did, async () => ({ outcome: 'none', message: 'no update pending' })) });
  let now = Date.now();
  const realNow = Date.now;
  Date.now = () => now;
  try {
    const lines = await withConsole(() => runPostBoot(ctx2, postBootSteps(ctx2, false, { ...r2.edges, pause: async (ms) => { now += ms; } })));
    assert.equal(lines, ['kiln: not blessing slot b: the node is not healthy (boot steps failed, k3s not ready)\n']);
  } finally { Date.now = realNow; }
  assert.equal(r2.did, ['uncordon', 'add-ons', 'every 3600000']);
});

test('the live system neither blesses nor updates, but runs add-ons and the key refresh', async () => {
  const ctx = node({}, true);
  const { did, edges } = recorder({ newUpdater: () => { throw new Error('must not be made'); } });
  const lines = await withConsole(() => runPostBoot(ctx, postBootSteps(ctx, true, edges)));
  assert.equal(did, ['add-ons', 'every 3600000']);
  assert.equal(lines, ['kiln: live system: not blessing or updating (install it with kiln install)\n']);
});

test.run();
