// express-zod target of the "contract" scenario of bench/run.sh: the Express
// stack of the API-security guides as the application itself, doing in the
// app the work Portcullis does for bench/contract/openapi.yaml:
//
//   POST /api/v1/posts      body validated against Post (zod), 400 with the
//                           errors, 201 echoing the parsed post with an id
//   GET  /api/v1/users/:id  the upstream's user row (bench/contract/user.json,
//                           internal fields included) passed through a zod
//                           object of the User fields, which strips the rest
//
// One process (no cluster); run.sh pins it to SUT_CPU.
//
//   PORT=8080 NODE_ENV=production node bench/express/server.js
'use strict';

const { randomUUID } = require('node:crypto');
const express = require('express');
const helmet = require('helmet');
const cors = require('cors');
const { rateLimit } = require('express-rate-limit');
const { z } = require('zod');

const USER_ROW = require('../contract/user.json');

const port = Number(process.env.PORT || 8080);
const host = process.env.HOST || '127.0.0.1';

// Post, as in the OpenAPI document. Strict, like the gateway's closed
// objects: an undeclared property (mass assignment) is an error.
const Post = z.strictObject({
  title: z.string().min(1).max(200),
  content: z.string().min(1).max(50000),
  tags: z.array(z.string().max(50)).max(10).optional(),
  publishedAt: z.iso.datetime({ offset: true }).optional(),
});

// User, as in the OpenAPI document. z.object strips unknown keys: the
// answer keeps only the declared properties.
const User = z.object({
  id: z.string(),
  username: z.string(),
  email: z.email(),
  displayName: z.string(),
  createdAt: z.iso.datetime({ offset: true }),
});

const app = express();
app.disable('x-powered-by');
app.use(helmet());
app.use(cors({ origin: ['https://app.example.com', 'https://admin.example.com'] }));
app.use(express.json({ limit: '1mb' }));
app.use(
  rateLimit({
    windowMs: 60 * 1000,
    limit: 1_000_000_000, // active, never reached
    standardHeaders: 'draft-8',
    legacyHeaders: false,
  }),
);
// The request id every gateway of the benchmark adds.
app.use((req, res, next) => {
  res.setHeader('X-Request-Id', randomUUID());
  next();
});

let nextId = 0;
app.post('/api/v1/posts', (req, res) => {
  const parsed = Post.safeParse(req.body);
  if (!parsed.success) {
    return res.status(400).json({
      title: 'Validation failed',
      status: 400,
      errors: parsed.error.issues.map((i) => ({
        pointer: i.path.length ? '/' + i.path.join('/') : '',
        message: i.message,
      })),
    });
  }
  nextId += 1;
  return res.status(201).json({ id: `p-${nextId}`, ...parsed.data });
});

app.get('/api/v1/users/:id', (req, res) => {
  // What a data layer hands back: the whole row.
  const row = { ...USER_ROW, id: req.params.id };
  res.json(User.parse(row));
});

app.use((req, res) => {
  res.status(404).json({ title: 'Not found', status: 404 });
});

// express.json's errors (malformed JSON 400, over the limit 413) as JSON.
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  const status = err.status || err.statusCode || 500;
  res.status(status).json({ title: status >= 500 ? 'Internal error' : err.type || 'Bad request', status });
});

app.listen(port, host, () => {
  console.log(`express-zod listening on http://${host}:${port} (node ${process.version})`);
});
