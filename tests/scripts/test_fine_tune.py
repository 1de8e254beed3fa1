"""train_latent.py --init-from: fine-tuning a pipeline's transformer on data with another class count."""

from ..tiny import trained


def test_train_latent_init_from_a_pipeline_with_another_class_count(train_latent, config, cache, tmp_path, capsys):
    source = trained(classes=3)
    (tmp_path / "pipe").mkdir()
    source.save_pretrained(tmp_path / "pipe" / "transformer")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    result = train_latent.main(config(cache, tmp_path / "run", init_from=str(tmp_path / "pipe"), max_steps=3,
                                      checkpointing_steps=3, model_config='{"num_layers": 2, "num_attention_heads": '
                                      '2, "attention_head_dim": 8}'))
    assert result["steps"] == 3 and result["final_loss"] < 10
    assert "re-initialised: cond_embed.class_embedder.weight (rows 0-9 for 10 classes, the source had 3" in \
        capsys.readouterr().out
