import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  canonicalize, keyIdOf, makeTrustRoot, parseTrustRoot, serializeManifest, signBytes, trustKeyOf, validateManifest, clockTrusted,
  MAX_SIG_BYTES, MAX_MANIFEST_BYTES,
  verifyChannel, verifyRootRotation, verifySignatures, type Manifest, type TrustRoot, type VerifyChannelInput,
} from '../../channels/manifest.ts';

const keypair = () => generateKeyPairSync('ed25519');
const A = keypair(), B = keypair(), C = keypair(), STRANGER = keypair();
const trust = makeTrustRoot([A.publicKey]);
const sha = (c: string) => c.repeat(64);

function manifest(over: Partial<Manifest> = {}): Manifest {
  return {
    schema: 'kiln-channel/1', channel: 'beta', serial: 7,
    issued: '2030-01-01T00:00:00Z', expires: '2030-02-01T00:00:00Z',
    releases: [{ version: '1.2.0', artifacts: { x86_64: { root: { url: '1.2.0/x86_64/fixture-root.img', size: 10, sha256: sha('a') } } } }],
    ...over,
  };
}
const NOW = Date.parse('2030-01-10T00:00:00Z');

function input(over: Partial<VerifyChannelInput> = {}, m = manifest(), keys: KeyObject[] = [A.privateKey]): VerifyChannelInput {
  const bytes = serializeManifest(m);
  return { manifestBytes: bytes, sigBytes: signBytes(bytes, keys), trust, channel: 'beta', state: { lastSerial: 6 }, now: NOW, ...over };
}

function refused(i: VerifyChannelInput, reason: string) {
  const r = verifyChannel(i);
  assert.is(r.ok, false, `expected refusal '${reason}'`);
  if (!r.ok) {
    assert.is(r.reason, reason, r.message);
    assert.ok(r.message.length > 10, 'a reason comes with an explanation');
  }
}

test('canonical form: sorted keys, no whitespace, undefined dropped, byte-for-byte', () => {
  const text = canonicalize({ b: 1, a: [true, null, 'x"y', 0.25], c: undefined, A: { z: 1, e: -3 } });
  assert.is(text, '{"A":{"e":-3,"z":1},"a":[true,null,"x\\"y",0.25],"b":1}');
  // The same content in any key order gives the same bytes.
  const m = manifest();
  const shuffled = JSON.parse(JSON.stringify({ releases: m.releases, serial: m.serial, expires: m.expires, issued: m.issued, channel: m.channel, schema: m.schema }));
  assert.ok(serializeManifest(shuffled).equals(serializeManifest(m)));
  assert.is(serializeManifest(m).toString(),
    '{"channel":"beta","expires":"2030-02-01T00:00:00Z","issued":"2030-01-01T00:00:00Z","releases":[{"artifacts":{"x86_64":{"root":' +
    `{"sha256":"${sha('a')}","size":10,"url":"1.2.0/x86_64/fixture-root.img"}}},"version":"1.2.0"}],"schema":"kiln-channel/1","serial":7}`);
  assert.throws(() => canonicalize({ x: NaN }), /NaN/);
  assert.throws(() => canonicalize({ d: new Date(0) }), /plain objects/);
});

test('a signed manifest verifies and comes back parsed', () => {
  const r = verifyChannel(input());
  assert.ok(r.ok, !r.ok ? r.message : '');
  if (r.ok) {
    assert.is(r.manifest.serial, 7);
    assert.is(r.unchanged, false);
    assert.equal(r.keyids, [keyIdOf(A.publicKey)]);
  }
});

test('tampered manifest: one changed byte breaks the signature', () => {
  const i = input();
  const bytes = Buffer.from(i.manifestBytes);
  const at = bytes.indexOf('"size":10') + 8;
  bytes[at] = '9'.charCodeAt(0);
  refused({ ...i, manifestBytes: bytes }, 'bad-signature');
});

test('bad signature bytes and malformed signature files are refused', () => {
  const i = input();
  const sig = JSON.parse(Buffer.from(i.sigBytes).toString());
  const raw = Buffer.from(sig.signatures[0].sig, 'base64');
  raw[0] ^= 1;
  sig.signatures[0].sig = raw.toString('base64');
  refused({ ...i, sigBytes: Buffer.from(JSON.stringify(sig)) }, 'bad-signature');
  refused({ ...i, sigBytes: Buffer.from('not json') }, 'bad-signature');
  refused({ ...i, sigBytes: Buffer.from('{"signatures":[]}') }, 'bad-signature');
});

test('a key the trust root does not know is refused', () => {
  refused(input({}, manifest(), [STRANGER.privateKey]), 'unknown-key');
  // ...but an extra unknown signature next to a trusted one is harmless (rotation overlap).
  assert.ok(verifyChannel(input({}, manifest(), [STRANGER.privateKey, A.privateKey])).ok);
});

test('a keyid that claims a trusted key but carries another key\'s signature is refused', () => {
  const i = input({}, manifest(), [STRANGER.privateKey]);
  const sig = JSON.parse(Buffer.from(i.sigBytes).toString());
  sig.signatures[0].keyid = keyIdOf(A.publicKey);
  refused({ ...i, sigBytes: Buffer.from(JSON.stringify(sig)) }, 'bad-signature');
});

test('replayed serials are refused; the same manifest re-read is accepted', () => {
  refused(input({ state: { lastSerial: 8 } }), 'replay');
  refused(input({ state: { lastSerial: 7, lastDigest: 'f'.repeat(64) } }), 'replay');
  const first = verifyChannel(input());
  assert.ok(first.ok);
  if (!first.ok) return;
  const again = verifyChannel(input({ state: { lastSerial: 7, lastDigest: first.digest } }));
  assert.ok(again.ok && again.unchanged);
});

test('expired manifests are refused, with the clock floored by build time and last issued', () => {
  refused(input({ now: Date.parse('2030-02-01T00:00:01Z') }), 'expired');
  // A board with no RTC thinks it is 1970; the build time still says the manifest is stale.
  refused(input({ now: 0, buildTime: Date.parse('2030-03-01T00:00:00Z') }), 'expired');
  refused(input({ now: 0, state: { lastSerial: 6, lastIssued: '2030-02-02T00:00:00Z' } }), 'expired');
  assert.ok(verifyChannel(input({ now: 0, buildTime: Date.parse('2029-12-01T00:00:00Z') })).ok);
  assert.ok(verifyChannel(input({ now: new Date('2030-02-01T00:00:00Z') })).ok, 'valid up to and including expires');
});

test('each trusted key is checked once: a later entry for the same key cannot rescue a bad first one', () => {
  const bytes = serializeManifest(manifest());
  const good = JSON.parse(signBytes(bytes, [A.privateKey]).toString()).signatures[0];
  const forged = { keyid: good.keyid, sig: Buffer.alloc(64, 1).toString('base64') };
  // Without the rule, N entries naming a trusted key would cost N Ed25519 checks.
  const r = verifySignatures(bytes, Buffer.from(JSON.stringify({ signatures: [forged, forged, good] })), trust);
  assert.ok(!r.ok && r.reason === 'bad-signature', JSON.stringify(r));
  assert.ok(verifySignatures(bytes, Buffer.from(JSON.stringify({ signatures: [good, forged] })), trust).ok, 'checking stops at the threshold');
  // Unknown keyids are never checked; hundreds of them and one good entry verify quickly.
  const strangers = Array.from({ length: 300 }, (_, i) => ({ keyid: i.toString(16).padStart(64, '0'), sig: forged.sig }));
  assert.ok(verifySignatures(bytes, Buffer.from(JSON.stringify({ signatures: [...strangers, good] })), trust).ok);
  const onlyStrangers = verifySignatures(bytes, Buffer.from(JSON.stringify({ signatures: strangers })), trust);
  assert.ok(!onlyStrangers.ok && onlyStrangers.reason === 'unknown-key' && /and 296 more/.test(onlyStrangers.message) && onlyStrangers.message.length < 200, JSON.stringify(onlyStrangers));
});

test('oversized signature files and manifests are refused before any check', () => {
  const i = input();
  const sig = JSON.parse(Buffer.from(i.sigBytes).toString());
  const padded = Buffer.from(JSON.stringify({ ...sig, pad: ' '.repeat(MAX_SIG_BYTES) }));
  const r = verifyChannel({ ...i, sigBytes: padded });
  assert.ok(!r.ok && r.reason === 'bad-signature' && /more than the 65536 allowed/.test(r.message), JSON.stringify(r).slice(0, 300));
  const big = Buffer.concat([Buffer.from(i.manifestBytes), Buffer.alloc(MAX_MANIFEST_BYTES, 0x20)]);
  const m = verifyChannel({ ...i, manifestBytes: big, sigBytes: signBytes(big, [A.privateKey]) });
  assert.ok(!m.ok && m.reason === 'schema' && /more than the 1048576 allowed/.test(m.message));
});

test('future-dated manifests: refused once the clock is trusted, never raise the floor', () => {
  const build = Date.parse('2029-12-01T00:00:00Z');
  assert.ok(clockTrusted(NOW, build) && !clockTrusted(0, build) && clockTrusted(0), 'trusted = not below the build time (or no build time known)');
  // Issued 2030-01-01; the node's clock says 2029-12-30T23:00Z (25 h earlier): too far ahead.
  refused(input({ now: Date.parse('2029-12-30T23:00:00Z'), buildTime: build }), 'future');
  refused(input({ now: Date.parse('2029-12-30T23:00:00Z') }), 'future');
  const edge = verifyChannel(input({ now: Date.parse('2029-12-31T00:00:00Z'), buildTime: build }));
  assert.ok(edge.ok && edge.raiseFloor, 'a day ahead is tolerated (publisher clocks drift)');
  const normal = verifyChannel(input({ buildTime: build }));
  assert.ok(normal.ok && normal.raiseFloor);
  // A board that booted in 1970 cannot judge the date: accepted, but its issued is no floor...
  const untrusted = verifyChannel(input({ now: 0, buildTime: build }));
  assert.ok(untrusted.ok && !untrusted.raiseFloor);
  // ...unless it is within a day of the build time.
  const fresh = verifyChannel(input({ now: 0, buildTime: Date.parse('2029-12-31T12:00:00Z') }));
  assert.ok(fresh.ok && fresh.raiseFloor);
});

test('a manifest signed for another channel is refused', () => {
  refused(input({ channel: 'stable' }), 'wrong-channel');
  refused(input({ channel: 'beta' }, manifest({ channel: 'rc' })), 'wrong-channel');
});

test('schema violations are refused (even when properly signed)', () => {
  const sign = (obj: unknown) => {
    const bytes = Buffer.from(JSON.stringify(obj));
    return input({ manifestBytes: bytes, sigBytes: signBytes(bytes, [A.privateKey]) });
  };
  refused(sign({ ...manifest(), extra: true }), 'schema');
  refused(sign({ ...manifest(), serial: 1.5 }), 'schema');
  refused(sign({ ...manifest(), expires: 'next tuesday' }), 'schema');
  refused(sign(manifest({ releases: [{ version: 'v1', artifacts: {} }] })), 'schema');
  const dup = manifest().releases[0]!;
  refused(sign(manifest({ releases: [dup, dup] })), 'schema');
  refused(sign(manifest({ issued: '2030-03-01T00:00:00Z' })), 'schema');
  const noRoot = { version: '1.0.0', artifacts: { x86_64: { uki: { url: 'u', size: 1, sha256: sha('b') } } } };
  assert.is(validateManifest(manifest({ releases: [noRoot as never] })).ok, false);
  const r = verifyChannel(sign({ ...manifest(), extra: true }));
  assert.ok(!r.ok && /extra/.test(r.message), 'the message names the offending field');
});

test('threshold: two of three keys required', () => {
  const t: TrustRoot = makeTrustRoot([A.publicKey, B.publicKey, C.publicKey], 2);
  const bytes = serializeManifest(manifest());
  assert.is(verifySignatures(bytes, signBytes(bytes, [A.privateKey]), t).ok, false);
  assert.is(verifySignatures(bytes, signBytes(bytes, [A.privateKey, A.privateKey]), t).ok, false, 'one key twice is still one key');
  assert.ok(verifySignatures(bytes, signBytes(bytes, [A.privateKey, C.privateKey]), t).ok);
});

test('a trust object with threshold 0 still needs one valid signature', () => {
  const bytes = serializeManifest(manifest());
  const loose = { keys: trust.keys, threshold: 0 };
  assert.is(verifySignatures(bytes, signBytes(bytes, [STRANGER.privateKey]), loose).ok, false);
  assert.ok(verifySignatures(bytes, signBytes(bytes, [A.privateKey]), loose).ok);
});

test('trust roots: keyids must match their keys', () => {
  const t = JSON.parse(JSON.stringify(trust));
  t.keys[0].keyid = keyIdOf(B.publicKey);
  assert.throws(() => parseTrustRoot(t), /does not match/);
  assert.throws(() => parseTrustRoot({ ...trust, threshold: 2 }), /threshold/);
  const pem = { keyid: keyIdOf(A.publicKey), publicKey: A.publicKey.export({ format: 'pem', type: 'spki' }).toString() };
  assert.ok(parseTrustRoot({ ...trust, keys: [pem] }), 'PEM public keys are accepted too');
});

test('root rotation needs a threshold of the old keys (and the new keys, and a higher version)', () => {
  const old = makeTrustRoot([A.publicKey, B.publicKey, C.publicKey], 2, 1);
  const next = { schema: 'kiln-root/1', version: 2, threshold: 1, keys: [trustKeyOf(STRANGER.publicKey)] };
  const bytes = Buffer.from(canonicalize(next));
  const ok = verifyRootRotation(old, bytes, signBytes(bytes, [A.privateKey, B.privateKey, STRANGER.privateKey]));
  assert.ok(ok.ok, !ok.ok ? ok.message : '');
  if (ok.ok) assert.is(ok.root.keys[0]!.keyid, keyIdOf(STRANGER.publicKey));

  const one = verifyRootRotation(old, bytes, signBytes(bytes, [A.privateKey, STRANGER.privateKey]));
  assert.ok(!one.ok && one.reason === 'bad-signature', 'one old key is below the threshold');
  const onlyNew = verifyRootRotation(old, bytes, signBytes(bytes, [STRANGER.privateKey]));
  assert.ok(!onlyNew.ok && onlyNew.reason === 'unknown-key', 'the new key cannot authorise itself');
  const unproven = verifyRootRotation(old, bytes, signBytes(bytes, [A.privateKey, B.privateKey]));
  assert.ok(!unproven.ok, 'the new root must be signed by its own keys too');
  const stale = Buffer.from(canonicalize({ ...next, version: 1 }));
  const rb = verifyRootRotation(old, stale, signBytes(stale, [A.privateKey, B.privateKey, STRANGER.privateKey]));
  assert.ok(!rb.ok && rb.reason === 'rollback');

  // After rotation, manifests by the old key are no longer trusted.
  if (ok.ok) {
    const r = verifyChannel({ ...input(), trust: ok.root });
    assert.ok(!r.ok && r.reason === 'unknown-key');
  }
});

test.run();
