"""`text2text-generation` pipeline for BANG: text in, `[{"generated_text": ...}]` out, in any decoding mode.

Transformers 5 removed the `text2text-generation` task; `import bang_nar` registers this class under that name,
and `pipeline.save_pretrained` copies this file next to the checkpoint (`custom_pipelines` in its config), so
`pipeline("text2text-generation", model=folder, trust_remote_code=True)` works where the package is not installed.
Imports only transformers.

```python
>>> from transformers import pipeline
>>> import bang_nar
>>> generator = pipeline("text2text-generation", model="path/to/bang-model")
>>> generator("the source text", mode="nar")
[{'generated_text': '...'}]
```
"""

from typing import Any

from transformers import Pipeline


class BangText2TextGenerationPipeline(Pipeline):
    """Encode the source, `model.generate(**generate_kwargs)` (`mode=` picks AR, NAR, nar_verify or semi-NAR; the
    default is the model's), decode each output as `{"generated_text": ...}` (special tokens dropped)."""

    # Text in, text out: the tokenizer only (Pipeline types these flags as None, "decide from the task mapping").
    _load_processor = False  # type: ignore[assignment]
    _load_image_processor = False  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    _load_tokenizer = True  # type: ignore[assignment]

    def _sanitize_parameters(
        self,
        truncation: bool | None = None,
        max_source_length: int | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        **generate_kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        preprocess: dict[str, Any] = {}
        if truncation is not None:
            preprocess["truncation"] = truncation
        if max_source_length is not None:
            preprocess["max_source_length"] = max_source_length
        postprocess = {}
        if clean_up_tokenization_spaces is not None:
            postprocess["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return preprocess, generate_kwargs, postprocess

    def preprocess(  # type: ignore[override]  # named parameters instead of **preprocess_parameters
        self, text: str, truncation: bool = True, max_source_length: int | None = None
    ) -> dict:
        if not isinstance(text, str):
            raise TypeError(f"text2text-generation takes a string (or a list of strings), got {type(text).__name__}.")
        return self.tokenizer(text, return_tensors="pt", truncation=truncation, max_length=max_source_length)

    def _forward(self, model_inputs: dict, **generate_kwargs: Any) -> dict:  # type: ignore[override]
        sequences = self.model.generate(  # type: ignore[operator]
            model_inputs["input_ids"], attention_mask=model_inputs.get("attention_mask"), **generate_kwargs
        )
        sequences = getattr(sequences, "sequences", sequences)  # return_dict_in_generate=True
        return {"output_ids": sequences}

    def postprocess(  # type: ignore[override]  # named parameters instead of **postprocess_parameters
        self, model_outputs: dict, clean_up_tokenization_spaces: bool = True
    ) -> list[dict[str, str]]:
        texts = self.tokenizer.batch_decode(
            model_outputs["output_ids"], skip_special_tokens=True,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
        )  # fmt: skip
        return [{"generated_text": text} for text in texts]


__all__ = ["BangText2TextGenerationPipeline"]
