// npm run faults: the fault matrix. Every cell injects one fault into a real node (QEMU,
// x86_64) or into the real updater, and the table says what happened: the step the fault hit,
// the outcome, the slot that booted, whether data survived and how long recovery took.
// Prints figures; asserts nothing (the e2e tests assert on the cells they run).
import { faultsAfterStaging, formatTable, k3sNeverHealthy, powerCutsWhileWriting, type FaultRow } from '../test/e2e/faults.ts';

const rows: FaultRow[] = [];
const report = (r: FaultRow) => { rows.push(r); console.log(`fault: ${r.fault}: ${r.outcome}`); };
const cell = async (name: string, fn: () => Promise<void>) => {
  try { await fn(); } catch (e) { rows.push({ fault: name, step: '-', outcome: `HARNESS ERROR: ${(e as Error).message.split('\n')[0]}`, slot: '-', dataIntact: null, recoverS: null, where: 'QEMU' }); }
};
await cell('power cuts while writing', () => powerCutsWhileWriting(report));
await cell('faults after staging', () => faultsAfterStaging(report, ['blessing', 'manifests', 'init crash', 'bad config', 'unreachable sources', 'panic']));
await cell('k3s never healthy', () => k3sNeverHealthy(report));
console.log(`\n${formatTable(rows)}`);
