"""Pretraining (book chapter 5 and appendix D): losses, the book's loop (`train_model_simple`,
loop.py), the resumable trainer (`train_model`, trainer.py), checkpoints, plots."""
from .checkpoint import (checkpoint_info, export_model, load_checkpoint, load_model,
                         read_checkpoint, read_checkpoint_header, save_checkpoint)
from .loop import evaluate_model, generate_and_print_sample, train_model_simple
from .trainer import train_model
from .loss import calc_loss_batch, calc_loss_loader, perplexity
from .plotting import plot_losses, plot_values
from .signals import Interrupted

__all__ = ["checkpoint_info", "export_model", "load_checkpoint", "load_model", "read_checkpoint",
           "read_checkpoint_header", "save_checkpoint", "evaluate_model",
           "generate_and_print_sample", "train_model", "train_model_simple", "calc_loss_batch",
           "calc_loss_loader", "perplexity", "plot_losses", "plot_values", "Interrupted"]
