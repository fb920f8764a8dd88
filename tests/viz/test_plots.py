"""Figures: colour images drawn channel-last, the PCA projection, every figure written."""

import numpy as np
import pytest
import torch

from pyro_vae import api
from pyro_vae.viz import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def colour_image() -> torch.Tensor:
    """A flattened (3, 2, 2) image: top-right pure red, bottom-left pure green, else black."""
    image = torch.zeros(3, 2, 2)
    image[0, 0, 1] = 1.0
    image[1, 1, 0] = 1.0
    return image.reshape(-1)


def check_colour_is_drawn_channel_last():
    picture = plots.as_picture(colour_image(), (3, 2, 2))
    assert picture.shape == (2, 2, 3)
    assert picture[0, 1].tolist() == [1, 0, 0] and picture[1, 0].tolist() == [0, 1, 0]
    assert picture[0, 0].tolist() == [0, 0, 0] == picture[1, 1].tolist()


def test_colour_images_are_drawn_as_rgb_and_grey_as_grey():
    check_colour_is_drawn_channel_last()
    grey = plots.as_picture(torch.arange(6.0) / 5, (1, 2, 3))
    assert grey.shape == (2, 3) and grey[1, 2] == 1.0
    assert plots.as_picture(torch.zeros(16), (16,)).shape == (4, 4)
    tile = plots.mosaic([plots.as_picture(colour_image(), (3, 2, 2))] * 2, cols=3)
    assert tile.shape == (4, 10, 3) and tile[1, 2].tolist() == [1, 0, 0]
    assert tile[1, -2].tolist() == [1, 1, 1]  # the empty third slot stays white


def test_the_colour_check_catches_a_plain_reshape(monkeypatch):
    """Injected bug: reshaping (C, H, W) pixels straight to (H, W, C)."""
    monkeypatch.setattr(
        plots,
        "as_picture",
        lambda row, shape: row.reshape(shape[1], shape[2], shape[0]).numpy(),
    )
    with pytest.raises(AssertionError):
        check_colour_is_drawn_channel_last()


def test_projection_keeps_the_axis_of_largest_variance():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 5, generator=g) * torch.tensor([0.1, 5.0, 0.1, 0.1, 0.1])
    points, name = plots.project_2d(z)
    assert points.shape == (500, 2) and "principal axes" in name
    corr = np.corrcoef(points[:, 0].numpy(), z[:, 1].numpy())[0, 1]
    assert abs(corr) > 0.99
    flat, _ = plots.project_2d(z[:, :2])
    assert torch.equal(flat, z[:, :2])


@pytest.mark.slow
def test_every_figure_is_written_for_a_colour_model(tmp_path):
    x = (np.random.default_rng(0).random((60, 3, 4, 4)) < 0.4).astype(np.float32)
    model = api.Model(latent_dim=3, hidden=[16], epochs=1, batch_size=20).fit(
        x, labels=np.arange(60) % 3
    )
    assert model.shape == (3, 4, 4)
    written = model.figures(tmp_path)
    names = {p.name for p in written}
    assert {
        "elbo.png",
        "reconstructions.png",
        "samples.png",
        "latent_scatter.png",
        "latent_traversal.png",
        "interpolation.png",
        "kl_per_dim.png",
    } == names
    for path in written:
        assert path.read_bytes()[:8] == PNG_MAGIC, path.name


def test_save_shows_the_figure_inline_only_under_ipython(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    shown = []
    monkeypatch.setattr(plots, "in_notebook", lambda: True)
    monkeypatch.setattr(plots, "show_inline", lambda fig, *a: shown.append(fig))
    fig = Figure()
    fig.subplots().plot([0, 1])
    plots.save(fig, tmp_path / "a.png")
    assert shown == [fig] and (tmp_path / "a.png").is_file()
    monkeypatch.setattr(plots, "in_notebook", lambda: False)
    plots.save(fig, tmp_path / "b.png")
    assert len(shown) == 1


def test_in_notebook_means_a_front_end_that_shows_png(monkeypatch):
    IPython = pytest.importorskip("IPython")

    class Shell:
        def __init__(self, types):
            self.display_formatter = type("F", (), {"active_types": types})()

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert not plots.in_notebook()  # plain Python
    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell(["text/plain"]))
    assert not plots.in_notebook()  # a terminal IPython shows text only
    monkeypatch.setattr(
        IPython, "get_ipython", lambda: Shell(["text/plain", "image/png"])
    )
    assert plots.in_notebook()  # a Jupyter kernel


def test_show_inline_hands_the_notebook_png_bytes(tmp_path, monkeypatch):
    display = pytest.importorskip("IPython.display")
    from matplotlib.figure import Figure

    shown = []
    monkeypatch.setattr(display, "display", lambda obj: shown.append(obj))
    fig = Figure()
    fig.subplots().plot([0, 1])
    png = plots.save(fig, tmp_path / "a.png")
    plots.show_inline(fig, png)
    assert shown[0].format == "png" and shown[0].data == png.read_bytes()
    pdf = plots.save(fig, tmp_path / "a.pdf")
    plots.show_inline(fig, pdf)  # not a PNG file: the figure is rendered to PNG
    assert shown[1].data[:8] == PNG_MAGIC


def drawn(monkeypatch):
    """Keep the figures that plots.save would close, to read them back."""
    figures = []
    real = plots.save

    def keep(fig, path, *args, **kwargs):
        figures.append(fig)
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "save", keep)
    return figures


def test_latent_scatter_names_the_classes_by_their_folders(tmp_path, monkeypatch):
    figures = drawn(monkeypatch)
    z, labels = torch.randn(30, 2), torch.arange(30) % 3
    plots.latent_scatter(z, tmp_path / "s.png", labels, ("cat", "dog", "owl"))
    legend = figures[-1].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["cat", "dog", "owl"]
    plots.latent_scatter(z, tmp_path / "n.png", labels)  # no names: a colour bar
    assert figures[-1].axes[0].get_legend() is None and len(figures[-1].axes) == 2


def test_elbo_figure_gives_kl_its_own_axis_and_shows_bits(tmp_path, monkeypatch):
    figures = drawn(monkeypatch)
    rows = [
        {"epoch": e, "train_objective": -15000.0 + e, "seconds": 1.0} for e in (1, 2, 3)
    ]
    for row, elbo, kl in ((rows[1], -14000.0, 20.0), (rows[2], -13900.0, 25.0)):
        bits = -elbo / (3072 * np.log(2))
        row.update(train_elbo=elbo, test_elbo=elbo, kl=kl, reconstruction=elbo + kl)
        row.update(test_bits_per_dim=bits)
    plots.training_curves(rows, tmp_path / "elbo.png")
    fig = figures[-1]
    kl_axis = next(a for a in fig.axes if "KL" in a.get_title())
    low, high = kl_axis.get_ylim()
    assert 15 < low and high < 30  # the KL is drawn on a scale of its own, not 0-14,000
    assert "bits/dim" in right_labels(fig)
    no_bits = [{k: v for k, v in r.items() if k != "test_bits_per_dim"} for r in rows]
    plots.training_curves(no_bits, tmp_path / "elbo2.png")
    assert "bits/dim" not in right_labels(figures[-1])


def right_labels(fig):
    """The labels of the secondary (right-hand) axes of a figure's panels."""
    return [c.get_ylabel() for a in fig.axes for c in a.child_axes]
