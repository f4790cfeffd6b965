#!/usr/bin/env node
import { controllerMain } from '../common/run.js';
import { Resizer } from './resizer.js';

controllerMain('tscsi-resizer', 10, (k, csi, opts) => new Resizer(k, csi, opts));
