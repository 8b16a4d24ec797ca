"""The sources every default number in imckit cites (short keys, as in SPEC.md).

Each model default carries one of these keys in a comment or field docstring, and the book
prints them through :func:`cite`. Tags say how a number relates to its source
(ENERGY-SOURCES.md): ``S`` stated by the source, ``S2`` read from a public model that encodes
the source, ``D`` arithmetic on sourced numbers, ``I`` an assumption of ours.
"""
from __future__ import annotations

SOURCES: dict[str, str] = {
    "GRIMM22": "C. Grimm, N. Verma, \"Neural Network Training on In-Memory-Computing Hardware "
               "With Radix-4 Gradients\", IEEE TCAS-I 69(10):4056-4068, 2022.",
    "GRIMM24": "C. Grimm, J. Lee, N. Verma, \"Training Neural Networks With In-Memory-Computing "
               "Hardware and Multi-Level Radix-4 Inputs\", IEEE TCAS-I 71(4), 2024.",
    "SUN20": "X. Sun et al., \"Ultra-Low Precision 4-bit Training of Deep Neural Networks\", "
             "NeurIPS 2020.",
    "JIA20": "H. Jia et al., \"A Programmable Heterogeneous Microprocessor Based on Bit-Scalable "
             "In-Memory Computing\", IEEE JSSC 55(9), 2020.",
    "JIA22": "H. Jia et al., \"Scalable and Programmable Neural Network Inference Accelerator "
             "Based on In-Memory Computing\", IEEE JSSC 57(1), 2022.",
    "LEE21": "J. Lee, H. Valavi, Y. Tang, N. Verma, \"Fully Row/Column-Parallel In-memory "
             "Computing SRAM Macro employing Capacitor-based Mixed-signal Computation with "
             "5-b Inputs\", Symp. VLSI Circuits 2021.",
    "HOR14": "M. Horowitz, \"Computing's energy problem (and what we can do about it)\", "
             "ISSCC 2014.",
    "SB17": "A. Stillmaker, B. Baas, \"Scaling equations for the accurate prediction of CMOS "
            "device performance from 180 nm to 7 nm\", Integration 58, 2017.",
    "CIMLOOP": "T. Andrulis, J. Emer, V. Sze, \"CiMLoop: A Flexible, Accurate, and Fast "
               "Compute-In-Memory Modeling Tool\", ISPASS 2024.",
    "ADCMODEL": "T. Andrulis, R. Chen, H.-S. Lee, J. S. Emer, V. Sze, \"Modeling "
                "Analog-Digital-Converter Energy and Area for Compute-In-Memory Accelerator "
                "Design\", arXiv 2404.06553.",
    "CACTI": "CACTI SRAM estimates, as used by Accelergy's reference outputs.",
    "DUMOULIN16": "V. Dumoulin, F. Visin, \"A guide to convolution arithmetic for deep "
                  "learning\", arXiv 1603.07285, 2016.",
    "SIMBA20": "B. Zimmer et al., \"A 0.32-128 TOPS, Scalable Multi-Chip-Module-Based Deep "
               "Neural Network Inference Accelerator With Ground-Referenced Signaling in "
               "16 nm\", IEEE JSSC 55(4):920-932, 2020.",
    "SHAO19": "Y. S. Shao et al., \"Simba: Scaling Deep-Learning Inference with "
              "Multi-Chip-Module-Based Architecture\", MICRO 2019, "
              "doi:10.1145/3352460.3358302.",
    "OH20": "J. Oh et al., \"A 3.0 TFLOPS 0.62V Scalable Processor Core for High Compute "
            "Utilization AI Training and Inference\", Symp. VLSI Circuits 2020, "
            "doi:10.1109/VLSICircuits18222.2020.9162917.",
    "LEE22": "S. K. Lee et al., \"A 7-nm Four-Core Mixed-Precision AI Chip With 26.2-TFLOPS "
             "Hybrid-FP8 Training, 104.9-TOPS INT4 Inference, and Workload-Aware "
             "Throttling\", IEEE JSSC 57(1):182-197, 2022, doi:10.1109/JSSC.2021.3120113.",
    "SCHMID": "H. Schmid, P. Eichelberger, A. Huber, \"A tutorial to switched-capacitor noise "
              "analysis by hand\", Analog Integrated Circuits and Signal Processing, 2016, "
              "doi:10.1007/s10470-016-0806-1 (noise is sampled anew on each capacitor a switch "
              "opens on).",
    "LUQ": "B. Chmiel, R. Banner, E. Hoffer, H. Ben Yaacov, D. Soudry, \"Logarithmic Unbiased "
           "Quantization: Simple 4-bit Training in Deep Learning\", arXiv 2112.10769, 2021, "
           "doi:10.48550/arXiv.2112.10769.",
    "PACT": "J. Choi, Z. Wang, S. Venkataramani, P. I.-J. Chuang, V. Srinivasan, "
            "K. Gopalakrishnan, \"PACT: Parameterized Clipping Activation for Quantized Neural "
            "Networks\", arXiv 1805.06085, 2018.",
    "SAWB": "J. Choi et al. (IBM), statistics-aware weight binning (SAWB), 2018; the zero-aligned "
            "4-bit coefficients read from IBM's FMS Model Optimizer "
            "(fms_mo/quant/quantizers.py, sawb_params_code, code 403).",
}

TAGS: dict[str, str] = {
    "S": "stated by the source",
    "S2": "read from a public model or repository that encodes the source",
    "D": "arithmetic on sourced numbers",
    "I": "an assumption of ours",
}


def cite(key: str) -> str:
    """Full reference for a short key.

    >>> cite("SUN20").startswith("X. Sun")
    True
    """
    try:
        return SOURCES[key]
    except KeyError:
        raise ValueError(f"source={key!r} is not known: choose one of "
                         + ", ".join(sorted(SOURCES))) from None
