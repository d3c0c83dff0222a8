// `kiln channel set` takes effect for updates at once: the running updater follows the new
// channel's manifest and state space without a reboot.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { publishRelease } from '../../builder/release.ts';
import { fixtureBuild, NOW, world, type World } from './updater-harness.ts';

let w: World;
test.after.each(async () => { await w?.close(); });

async function publishBeta(version: string) {
  const { out } = fixtureBuild(w.dir, version);
  await publishRelease({ channel: 'beta', from: out, to: w.pub, key: w.keyFile, now: NOW });
}

test('setChannel: the next check reads the new channel, with its own state space', async () => {
  w = await world();
  await w.publish('2.0.0');
  await publishBeta('3.0.0-beta.1');
  const u = w.updater();
  const a = await u.check();
  assert.is(a.action === 'install' && a.version, '2.0.0');
  assert.match(u.setChannel('beta'), /updates now follow beta \(was stable\)/);
  const b = await u.check();
  assert.is(b.action === 'install' && b.version, '3.0.0-beta.1', b.message);
  assert.match(b.message, /beta serial/);
  assert.ok(existsSync(join(w.stateBase, 'beta', 'channel-state.json')), 'beta keeps its own state');
  assert.ok(u.status().includes(`channel: beta from ${w.server.base}`), u.status().join('\n'));
  assert.match(u.setChannel('beta'), /already follow beta/);
  assert.throws(() => u.setChannel('nightly' as never), /unknown channel 'nightly'/);
});

test('setChannel: an update staged but not judged moves with the channel', async () => {
  w = await world();
  await w.publish('2.0.0');
  const u = w.updater({ window: 'Sun 00:00-00:01' }); // 2030-01-01 is a Tuesday: the reboot waits
  const r = await u.apply();
  assert.ok(r.ok, r.message);
  assert.ok(u.readPending());
  u.setChannel('beta');
  assert.is(u.readPending()?.version, '2.0.0', 'the post-boot check still finds the staged update');
  assert.not.ok(existsSync(join(w.stateBase, 'stable', 'pending.json')));
});

test('setChannel during an update: the switch waits for it to end', async () => {
  w = await world();
  await w.publish('2.0.0');
  await publishBeta('3.0.0-beta.1');
  const u = w.updater({ window: 'Sun 00:00-00:01' });
  const running = u.apply();
  assert.match(u.setChannel('beta'), /updates follow beta once the running update is done/);
  assert.ok(u.status().includes(`channel: stable from ${w.server.base}`), 'the running update keeps its channel');
  const r = await running;
  assert.ok(r.ok && r.version === '2.0.0', r.message);
  assert.ok(u.status().includes(`channel: beta from ${w.server.base}`), u.status().join('\n'));
  assert.is(u.readPending()?.version, '2.0.0');
});

test.run();
