"""`tinygpt prepare-data`: tokenize a corpus once into token shards (tinygpt.data.shards) that
`tinygpt pretrain --data` reads window by window."""
from . import command
from ..argtypes import positive_float, positive_int


@command("prepare-data", "tokenize text files into token shards for pretrain --data")
def _prepare_data(sub):
    sub.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="UTF-8 text files, folders (their .txt files) or glob patterns")
    sub.add_argument("--out", required=True, help="output folder (resumes one left unfinished)")
    sub.add_argument("--strip-gutenberg", action="store_true",
                     help="keep only the text between Project Gutenberg's START and END lines")
    sub.add_argument("--val-fraction", type=positive_float, default=0.1,
                     help="the corpus's last fraction held out for validation (default 0.1)")
    sub.add_argument("--tokenizer", default="gpt2", metavar="gpt2|PATH",
                     help="gpt2 (default), or a model's own: its folder or tokenizer.json "
                     "(Hugging Face's format); ids are stored as uint32 past 65,536 tokens")
    sub.add_argument("--jobs", type=positive_int, help="processes (default: the CPUs)")
    sub.add_argument("--shard-mb", type=positive_float, default=64,
                     help="megabytes of text per shard (default 64)")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")

    def run(args):
        from ..data.shards import prepare_data
        index = prepare_data(args.inputs, args.out, strip_gutenberg=args.strip_gutenberg,
                             val_fraction=args.val_fraction, jobs=args.jobs,
                             shard_bytes=max(1, int(args.shard_mb * (1 << 20))),
                             progress=not args.quiet, tokenizer=args.tokenizer)
        print(f"{len(index['files'])} files: {index['train_tokens']:,} training tokens in "
              f"{len(index['train'])} shards, {index['val_tokens']:,} validation tokens in "
              f"{len(index['val'])} ({index['dtype']} ids); index: {args.out}/index.json")
    return run
