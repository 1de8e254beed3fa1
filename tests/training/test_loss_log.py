from diffit_hf.training.loss_log import LossHistory


def test_loss_history_keeps_rows_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "logs" / "loss.csv"
    history = LossHistory(path, ("loss", "lr"))
    for step in range(1, 7):
        history.append(step, {"loss": 1.0 / step, "lr": 0.1, "ignored": 5})
    history.flush()
    assert path.read_text().splitlines()[0] == "step,loss,lr"
    resumed = LossHistory(path, ("loss", "lr"), resume_step=4)
    assert resumed.column("step") == [1, 2, 3, 4] and resumed.column("loss")[-1] == 0.25
    assert LossHistory(path, ("loss", "lr")).rows == []  # a fresh run starts empty
    other_rank = LossHistory(tmp_path / "rank1.csv", ("loss", "lr"), is_main_process=False)
    other_rank.append(1, {"loss": 1.0, "lr": 0.1})
    other_rank.flush()
    assert not (tmp_path / "rank1.csv").exists()
