#!/usr/bin/env node
import { controllerMain } from '../common/run.js';
import { Attacher } from './attacher.js';

controllerMain('tscsi-attacher', 15, (k, csi, opts) => new Attacher(k, csi, opts));
