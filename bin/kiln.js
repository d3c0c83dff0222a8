#!/usr/bin/env node
// Workstation entry point: runs the TypeScript CLI through tsx's loader.
import { register } from 'tsx/esm/api';
register();
await import('../builder/cli.ts');
