"""Images, from bytes on the wire to the model's input: fetching a URL (`fetch`, SSRF-guarded),
opening and decoding one image (`decode`), what a decode costs in memory (`decode_cost`), the
bounded decode pool (`decoder`) and the weights' preprocessing (`preprocess`)."""
