Console.WriteLine("paravirt");
