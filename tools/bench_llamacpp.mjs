// llama.cpp as a speed peer: runs a GGUF (tools/gguf_export.py) on the CPU through node-llama-cpp's prebuilt
// llama.cpp libraries (tools/llamacpp/package.json; install with `npm install --prefix tools/llamacpp --omit=optional`).
// A measuring tool, not part of onnxmoe; nothing in the test suite uses it.
//
//   node tools/bench_llamacpp.mjs bench MODEL.gguf [--threads 2] [--prompt-len 128] [--gen 32] [--repeat 3] [--warmup 1]
//     One sequence (batch 1): a prompt of the same deterministic ids `onnxmoe bench` uses ((i*7919+13) % vocab) in
//     one batch, then --gen tokens decoded greedily one at a time with the KV cache; each run starts from an empty
//     cache. Prints JSON: prefill tok/s = prompt tokens / median prefill time, decode tok/s = 1 / median time per
//     generated token (over all tokens of all repeats), as `onnxmoe bench` defines them.
//   node tools/bench_llamacpp.mjs logits MODEL.gguf --ids 1,365,... [--threads 2] [--kv-type F32]
//     Prints JSON {ids, logits: [position][vocab]}: the raw logits after each prompt position (tools/gguf_check.py).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

function fail(message) {
    console.error(`bench_llamacpp: error: ${message}`);
    process.exit(2);
}

function parseArgs(argv) {
    const [command, model, ...rest] = argv;
    if (!["bench", "logits"].includes(command) || !model)
        fail("usage: bench_llamacpp.mjs bench|logits MODEL.gguf [options] (see the comment at the top of the file)");
    const opts = { threads: 2, promptLen: 128, gen: 32, repeat: 3, warmup: 1, ids: null, kvType: null, flashAttention: "auto" };
    const names = { "--threads": "threads", "--prompt-len": "promptLen", "--gen": "gen", "--repeat": "repeat",
        "--warmup": "warmup", "--ids": "ids", "--kv-type": "kvType", "--flash-attention": "flashAttention" };
    for (let i = 0; i < rest.length; i += 2) {
        const key = names[rest[i]];
        if (!key || rest[i + 1] === undefined) fail(`unknown or incomplete option ${rest[i]}`);
        opts[key] = rest[i + 1];
    }
    for (const [flag, k] of Object.entries(names).filter(([, k]) => ["threads", "promptLen", "gen", "repeat", "warmup"].includes(k))) {
        const v = Number(opts[k]);
        const least = k === "warmup" ? 0 : 1;
        if (!Number.isInteger(v) || v < least) fail(`${flag} must be an integer >= ${least}, got ${opts[k]}`);
        opts[k] = v;
    }
    if (!["auto", "on", "off"].includes(opts.flashAttention)) fail(`--flash-attention must be auto, on or off`);
    if (command === "logits") {
        if (!opts.ids) fail("logits needs --ids");
        opts.ids = String(opts.ids).split(",").map(Number);
        if (opts.ids.some(t => !Number.isInteger(t) || t < 0)) fail(`--ids must be comma-separated token ids`);
    }
    if (!fs.existsSync(model)) fail(`${model}: no such file`);
    return { command, model, opts };
}

async function loadLlamaCpp() {
    const here = path.dirname(fileURLToPath(import.meta.url));
    const entry = path.join(here, "llamacpp", "node_modules", "node-llama-cpp", "dist", "index.js");
    if (!fs.existsSync(entry)) fail(`${entry} is missing: run \`npm install --prefix tools/llamacpp --omit=optional\``);
    return import(pathToFileURL(entry).href);
}

const median = values => {
    const s = [...values].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main() {
    const { command, model: modelPath, opts } = parseArgs(process.argv.slice(2));
    const { getLlama, LlamaLogLevel } = await loadLlamaCpp();
    const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: opts.threads });
    let model;
    try {
        model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true });
    } catch (e) {
        fail(`${modelPath}: llama.cpp cannot load it (${e.message})`);
    }
    const vocab = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
    if (command === "logits" && opts.ids.some(t => t >= vocab)) fail(`--ids: every id must be below the vocabulary size ${vocab}`);
    const promptLen = command === "logits" ? opts.ids.length : opts.promptLen;
    const contextSize = promptLen + (command === "logits" ? 1 : opts.gen + 1);
    const contextOptions = {
        contextSize, batchSize: promptLen, sequences: 1,
        threads: { ideal: opts.threads, min: opts.threads },
        flashAttention: opts.flashAttention === "auto" ? "auto" : opts.flashAttention === "on",
    };
    if (opts.kvType) Object.assign(contextOptions, { experimentalKvCacheKeyType: opts.kvType, experimentalKvCacheValueType: opts.kvType });
    const context = await model.createContext(contextOptions);
    const sequence = context.getSequence();
    const greedy = { token: true, options: { temperature: 0 } };

    if (command === "logits") {
        const outputs = await sequence.controlledEvaluate(opts.ids.map(t => [t, { generateNext: { logits: true } }]));
        const logits = outputs.map(o => {
            const row = new Array(vocab).fill(null);
            for (const [token, value] of o.next.logits) row[token] = value;
            return row;
        });
        console.log(JSON.stringify({ model: modelPath, ids: opts.ids, logits }));
    } else {
        const ids = Array.from({ length: opts.promptLen }, (_, i) => (i * 7919 + 13) % vocab);
        const prefill = [], decode = [];
        for (let run = 0; run < opts.warmup + opts.repeat; run++) {
            await sequence.clearHistory();
            let t0 = process.hrtime.bigint();
            const out = await sequence.controlledEvaluate([...ids.slice(0, -1), [ids.at(-1), { generateNext: greedy }]]);
            const p = Number(process.hrtime.bigint() - t0) / 1e9;
            let next = out.at(-1).next.token;
            const times = [];
            for (let g = 0; g < opts.gen; g++) {
                t0 = process.hrtime.bigint();
                const step = await sequence.controlledEvaluate([[next, { generateNext: greedy }]]);
                times.push(Number(process.hrtime.bigint() - t0) / 1e9);
                next = step[0].next.token;
            }
            if (run < opts.warmup) continue;
            prefill.push(p);
            decode.push(...times);
        }
        const prefillMs = median(prefill) * 1e3, decodeMs = median(decode) * 1e3;
        console.log(JSON.stringify({
            engine: "llama.cpp", model: modelPath, binaries: "@node-llama-cpp/linux-x64 " + llama.llamaCppRelease.release,
            threads: opts.threads, prompt_len: opts.promptLen, gen: opts.gen, repeats: opts.repeat, warmup: opts.warmup,
            kv_type: opts.kvType ?? "default (F16)", flash_attention: context.flashAttention,
            prefill_ms: prefillMs, prefill_tok_s: opts.promptLen / (prefillMs / 1e3),
            decode_ms_per_token: decodeMs, decode_tok_s: 1e3 / decodeMs,
        }));
    }
    await context.dispose();
    await model.dispose();
    await llama.dispose();
}

await main();
